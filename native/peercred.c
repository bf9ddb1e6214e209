/*
 * SO_PEERCRED for Node: the uid, gid and pid of the process at the other end of a
 * connected Unix domain socket, as the kernel recorded them at connect(). The gateway
 * uses them to tell clients apart (the postgres user gets the pg keys, nobody else does).
 * It also takes the key store's lock with flock(2), which the kernel drops when the
 * holder dies, however it dies (see src/keystore/lock.ts).
 * A plain N-API module: built against node-api-headers, loadable by any Node >= 12.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
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

static void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  export_fn(env, exports, "getPeerCred", get_peer_cred);
  export_fn(env, exports, "flockExclusive", flock_exclusive);
  return exports;
}
