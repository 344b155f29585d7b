/*
 * sifuse_fuse: the FUSE session on libfuse3's low-level API, its /dev/fuse fd
 * polled on the libuv loop; every request is handed to JavaScript
 * (src/native/fuse.ts is the typed face, src/fuse the adapter).
 */
#include <node_api.h>
#include <fuse_lowlevel.h>

static napi_value init(napi_env env, napi_value exports) {
  (void)env;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
