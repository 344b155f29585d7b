{
  "targets": [
    {
      "target_name": "sifuse_sys",
      "sources": ["src/native/sys.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    },
    {
      "target_name": "sifuse_block",
      "sources": ["src/native/block.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
      "libraries": ["-ldeflate", "-lzstd"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    },
    {
      "target_name": "sifuse_fuse",
      "sources": ["src/native/fuse.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "FUSE_USE_VERSION=35"]
    }
  ]
}
