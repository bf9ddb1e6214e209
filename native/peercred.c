/*
 * SO_PEERCRED for Node: the uid, gid and pid of the process at the other end of a
 * connected Unix domain socket, as the kernel recorded them at connect(). The gateway
 * uses them to tell clients apart (the postgres user gets the pg keys, nobody else does).
 * It also takes the key store's lock with flock(2), which the kernel drops when the
 * holder dies, however it dies (see src/keystore/lock.ts). And it sends systemd's readiness
 * datagrams (sd_notify: READY=1, WATCHDOG=1, ...) to $NOTIFY_SOCKET, which Node cannot do
 * itself: it has no Unix datagram sockets (see src/ops/systemd.ts).
 * A plain N-API module: built against node-api-headers, loadable by any Node >= 12.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <node_api.h>

static napi_value fail(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

/* The one argument every function takes: a file descriptor. False (and an exception thrown) if it is not one. */
static int fd_arg(napi_env env, napi_callback_info info, int32_t *fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1
      || napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0) {
    napi_throw_type_error(env, NULL, "expected a file descriptor (a non-negative integer)");
    return 0;
  }
  return 1;
}

static napi_value get_peer_cred(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd)) return NULL;

  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof(cred)) return fail(env, strerror(errno));

  napi_value result, uid, gid, pid;
  napi_create_object(env, &result);
  napi_create_uint32(env, cred.uid, &uid);
  napi_create_uint32(env, cred.gid, &gid);
  napi_create_int32(env, cred.pid, &pid);
  napi_set_named_property(env, result, "uid", uid);
  napi_set_named_property(env, result, "gid", gid);
  napi_set_named_property(env, result, "pid", pid);
  return result;
}

/* flockExclusive(fd): true when this open file now holds an exclusive flock, false when
 * another open file holds one; throws on any other error. Never blocks. */
static napi_value flock_exclusive(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, &fd)) return NULL;

  int rc;
  do rc = flock(fd, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EWOULDBLOCK) return fail(env, strerror(errno));
  napi_value result;
  napi_get_boolean(env, rc == 0, &result);
  return result;
}

/* Copies a string argument into `buf` (NUL-terminated); false (and a TypeError thrown) if it is not a string that fits. */
static int string_arg(napi_env env, napi_value value, char *buf, size_t size, size_t *len, const char *what) {
  if (napi_get_value_string_utf8(env, value, buf, size, len) != napi_ok) {
    napi_throw_type_error(env, NULL, what);
    return 0;
  }
  if (*len >= size - 1) {
    napi_throw_range_error(env, NULL, what);
    return 0;
  }
  return 1;
}

/* sdNotify(path, message): sends `message` as one datagram to the AF_UNIX SOCK_DGRAM socket at
 * `path` ($NOTIFY_SOCKET; a leading '@' names an abstract socket), as sd_notify(3) does.
 * Returns the bytes sent; throws with strerror on failure. */
static napi_value sd_notify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "expected (path, message)");
    return NULL;
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  char path[sizeof(addr.sun_path) + 1];
  size_t path_len;
  if (!string_arg(env, argv[0], path, sizeof(path), &path_len, "the socket path must be a string shorter than sun_path")) return NULL;
  if (path_len == 0 || (path[0] != '/' && path[0] != '@')) return fail(env, "NOTIFY_SOCKET must be an absolute path or start with @");
  memcpy(addr.sun_path, path, path_len);
  if (path[0] == '@') addr.sun_path[0] = '\0'; /* abstract namespace: no trailing NUL counted */
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + (path[0] == '@' ? 0 : 1));

  char message[4096];
  size_t message_len;
  if (!string_arg(env, argv[1], message, sizeof(message), &message_len, "the message must be a string under 4 KiB")) return NULL;

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(env, strerror(errno));
  ssize_t sent;
  do sent = sendto(fd, message, message_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
  while (sent < 0 && errno == EINTR);
  int saved = errno;
  close(fd);
  if (sent < 0) return fail(env, strerror(saved));
  napi_value result;
  napi_create_int64(env, sent, &result);
  return result;
}

static void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  export_fn(env, exports, "getPeerCred", get_peer_cred);
  export_fn(env, exports, "flockExclusive", flock_exclusive);
  export_fn(env, exports, "sdNotify", sd_notify);
  return exports;
}
