/*
 * sifuse_sys: the *at and f* syscalls Node lacks, for DirLayer (src/layers/dir*)
 * and image locking. Each export is a thin synchronous wrapper that returns
 * the result or throws an Error whose .code is the errno name; every decision
 * lives in TypeScript (src/native/sys.ts is the typed face).
 */
#include <node_api.h>

static napi_value init(napi_env env, napi_value exports) {
  (void)env;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
