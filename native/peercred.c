/*
 * SO_PEERCRED for Node: the uid, gid and pid of the process at the other end of a
 * connected Unix domain socket, as the kernel recorded them at connect(). The gateway
 * uses them to tell clients apart (the postgres user gets the pg keys, nobody else does).
 * A plain N-API module: built against node-api-headers, loadable by any Node >= 12.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <node_api.h>

static napi_value fail(napi_env env, const char *message) {
  napi_throw_error(env, NULL, message);
  return NULL;
}

static napi_value get_peer_cred(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return fail(env, "getPeerCred(fd) needs a file descriptor");
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return fail(env, "getPeerCred(fd): fd must be a non-negative integer");

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

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "getPeerCred", NAPI_AUTO_LENGTH, get_peer_cred, NULL, &fn);
  napi_set_named_property(env, exports, "getPeerCred", fn);
  return exports;
}
