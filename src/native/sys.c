/*
 * sifuse_sys: the *at and f* syscalls Node lacks, for DirLayer (src/layers/dir*)
 * and image locking. Each export is a thin synchronous wrapper that returns
 * the result or throws an Error whose .code is the errno name (.errno the
 * number, .syscall the call); every decision lives in TypeScript
 * (src/native/sys.ts is the typed face and documents each call).
 *
 * Arguments are checked here: integers must be integral numbers in range,
 * paths and names are a JS string (UTF-8) or a Buffer, copied into a bounded,
 * NUL-terminated buffer (embedded NUL is EINVAL, too long is ENAMETOOLONG or
 * ERANGE for xattr names, as the kernel says). A bad argument type throws a
 * TypeError: that is a caller bug, never a filesystem condition.
 *
 * Syscalls newer than these headers (Debian 12, Linux 6.1 uapi) are called
 * by number: fchmodat2 (Linux 6.6) and the *xattrat family (Linux 6.13);
 * an older kernel answers ENOSYS and the TypeScript side falls back.
 */
#include <node_api.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#ifndef SYS_setxattrat
#define SYS_setxattrat 463
#define SYS_getxattrat 464
#define SYS_listxattrat 465
#define SYS_removexattrat 466
#endif
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#define RENAME_EXCHANGE (1 << 1)
#define RENAME_WHITEOUT (1 << 2)
#endif

/* struct xattr_args of include/uapi/linux/xattr.h (Linux 6.13), VER0 = 16 bytes. */
struct sifuse_xattr_args {
  uint64_t value;
  uint32_t size;
  uint32_t flags;
};

#define XATTR_NAME_BUF 256   /* XATTR_NAME_MAX 255 + NUL */
#define XATTR_VALUE_MAX 65536 /* XATTR_SIZE_MAX */
#define XATTR_LIST_MAX_ 65536 /* XATTR_LIST_MAX */
#define MAX_ARGS 8
#define SAFE_INT 9007199254740991.0 /* 2^53 - 1 */

typedef struct {
  napi_env env;
  const char *fn;
  size_t argc;
  napi_value argv[MAX_ARGS];
} args_t;

/* ---- errors ---- */

static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  const char *name = strerrorname_np(err);
  char code[32];
  char msg[160];
  if (name == NULL) {
    snprintf(code, sizeof code, "E%d", err);
    name = code;
  }
  snprintf(msg, sizeof msg, "%s: %s, %s", name, strerror(err), syscall);
  napi_value ecode, emsg, error, eno, esys;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &ecode) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &emsg) != napi_ok ||
      napi_create_error(env, ecode, emsg, &error) != napi_ok ||
      napi_create_int32(env, err, &eno) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &esys) != napi_ok ||
      napi_set_named_property(env, error, "errno", eno) != napi_ok ||
      napi_set_named_property(env, error, "syscall", esys) != napi_ok) {
    napi_throw_error(env, name, msg);
    return NULL;
  }
  napi_throw(env, error);
  return NULL;
}

static bool type_error(args_t *a, size_t i, const char *what) {
  char msg[128];
  snprintf(msg, sizeof msg, "sifuse_sys.%s: argument %zu must be %s", a->fn, i, what);
  napi_throw_type_error(a->env, "ERR_INVALID_ARG_TYPE", msg);
  return false;
}

static bool napi_failed(napi_env env) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "ERR_NAPI", "sifuse_sys: an N-API call failed");
  return false;
}

/* ---- arguments ---- */

static bool get_args(napi_env env, napi_callback_info info, args_t *a, size_t min, const char *fn) {
  a->env = env;
  a->fn = fn;
  a->argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &a->argc, a->argv, NULL, NULL) != napi_ok) return napi_failed(env);
  if (a->argc < min) {
    char msg[96];
    snprintf(msg, sizeof msg, "sifuse_sys.%s: expects %zu arguments, got %zu", fn, min, a->argc);
    napi_throw_type_error(env, "ERR_MISSING_ARGS", msg);
    return false;
  }
  return true;
}

static bool arg_present(args_t *a, size_t i) {
  if (i >= a->argc) return false;
  napi_valuetype t;
  if (napi_typeof(a->env, a->argv[i], &t) != napi_ok) return false;
  return t != napi_undefined;
}

/* An integral number within [lo, hi]. */
static bool arg_int(args_t *a, size_t i, double lo, double hi, int64_t *out) {
  napi_valuetype t;
  double d;
  if (i >= a->argc || napi_typeof(a->env, a->argv[i], &t) != napi_ok || t != napi_number)
    return type_error(a, i, "an integer");
  if (napi_get_value_double(a->env, a->argv[i], &d) != napi_ok) return napi_failed(a->env);
  if (!(d >= lo && d <= hi) || d != (double)(int64_t)d) return type_error(a, i, "an integer in range");
  *out = (int64_t)d;
  return true;
}

static bool arg_fd(args_t *a, size_t i, int *out) {
  int64_t v;
  /* AT_FDCWD (-100) is allowed wherever a directory fd is. */
  if (!arg_int(a, i, -100, INT_MAX, &v)) return false;
  *out = (int)v;
  return true;
}

static bool arg_u32(args_t *a, size_t i, uint32_t *out) {
  int64_t v;
  if (!arg_int(a, i, 0, 4294967295.0, &v)) return false;
  *out = (uint32_t)v;
  return true;
}

static bool arg_i32(args_t *a, size_t i, int32_t *out) {
  int64_t v;
  if (!arg_int(a, i, -2147483648.0, 2147483647.0, &v)) return false;
  *out = (int32_t)v;
  return true;
}

static bool arg_bool(args_t *a, size_t i, bool def, bool *out) {
  if (!arg_present(a, i)) {
    *out = def;
    return true;
  }
  if (napi_get_value_bool(a->env, a->argv[i], out) != napi_ok) return type_error(a, i, "a boolean");
  return true;
}

/* A Buffer's bytes (borrowed: valid while the argument is alive). */
static bool arg_bytes(args_t *a, size_t i, void **data, size_t *len) {
  bool is_buf = false;
  if (i >= a->argc || napi_is_buffer(a->env, a->argv[i], &is_buf) != napi_ok || !is_buf)
    return type_error(a, i, "a Buffer");
  if (napi_get_buffer_info(a->env, a->argv[i], data, len) != napi_ok) return napi_failed(a->env);
  return true;
}

/*
 * A string or Buffer copied NUL-terminated into buf[cap]. too_long is the
 * errno thrown when it does not fit; embedded NUL is EINVAL.
 */
static bool arg_cstr(args_t *a, size_t i, char *buf, size_t cap, int too_long) {
  napi_valuetype t;
  size_t len = 0;
  if (i >= a->argc || napi_typeof(a->env, a->argv[i], &t) != napi_ok) return type_error(a, i, "a string or Buffer");
  if (t == napi_string) {
    if (napi_get_value_string_utf8(a->env, a->argv[i], NULL, 0, &len) != napi_ok) return napi_failed(a->env);
    if (len >= cap) {
      throw_errno(a->env, too_long, a->fn);
      return false;
    }
    if (napi_get_value_string_utf8(a->env, a->argv[i], buf, cap, &len) != napi_ok) return napi_failed(a->env);
  } else {
    void *data;
    if (!arg_bytes(a, i, &data, &len)) return false;
    if (len >= cap) {
      throw_errno(a->env, too_long, a->fn);
      return false;
    }
    memcpy(buf, data, len);
    buf[len] = '\0';
  }
  if (strlen(buf) != len) {
    throw_errno(a->env, EINVAL, a->fn);
    return false;
  }
  return true;
}

static bool arg_path(args_t *a, size_t i, char buf[PATH_MAX]) {
  return arg_cstr(a, i, buf, PATH_MAX, ENAMETOOLONG);
}

static bool arg_xname(args_t *a, size_t i, char buf[XATTR_NAME_BUF]) {
  return arg_cstr(a, i, buf, XATTR_NAME_BUF, ERANGE);
}

/* ---- results ---- */

static napi_value undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  if (napi_create_double(env, d, &v) != napi_ok) {
    napi_failed(env);
    return NULL;
  }
  return v;
}

static napi_value boolean(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

static napi_value buffer_copy(napi_env env, const void *data, size_t len) {
  napi_value v;
  void *dst;
  if (napi_create_buffer_copy(env, len, data, &dst, &v) != napi_ok) {
    napi_failed(env);
    return NULL;
  }
  return v;
}

static bool set_num(napi_env env, napi_value obj, const char *key, double d) {
  napi_value v;
  return napi_create_double(env, d, &v) == napi_ok && napi_set_named_property(env, obj, key, v) == napi_ok;
}

/* ---- paths and files ---- */

/* openat2(dirfd, path, flags, mode, resolve) -> fd. O_CLOEXEC is always added. */
static napi_value js_openat2(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t flags, mode, resolve;
  char path[PATH_MAX];
  if (!get_args(env, info, &a, 5, "openat2") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &flags) || !arg_u32(&a, 3, &mode) || !arg_u32(&a, 4, &resolve))
    return NULL;
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (uint64_t)flags | O_CLOEXEC;
  /* The kernel refuses a mode without O_CREAT/O_TMPFILE (EINVAL). */
  how.mode = (flags & (O_CREAT | __O_TMPFILE)) ? mode : 0;
  how.resolve = resolve;
  long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  if (fd < 0) return throw_errno(env, errno, "openat2");
  return num(env, (double)fd);
}

/*
 * reopen(fd, flags) -> a new fd on the very inode `fd` (often O_PATH) refers
 * to, through its /proc/self/fd magic link, checked afterwards to be the same
 * st_dev/st_ino (ESTALE otherwise: /proc is not what it should be).
 */
static napi_value js_reopen(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  uint32_t flags;
  if (!get_args(env, info, &a, 2, "reopen") || !arg_fd(&a, 0, &fd) || !arg_u32(&a, 1, &flags)) return NULL;
  if (fd < 0) return throw_errno(env, EBADF, "reopen");
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  struct stat before, after;
  if (fstat(fd, &before) < 0) return throw_errno(env, errno, "reopen");
  /* O_NOFOLLOW would refuse the magic link itself; O_CREAT has nothing to create. */
  int nfd = open(path, (int)(flags & ~(uint32_t)(O_CREAT | O_NOFOLLOW)) | O_CLOEXEC | O_NOCTTY);
  if (nfd < 0) return throw_errno(env, errno, "reopen");
  if (fstat(nfd, &after) < 0 || after.st_dev != before.st_dev || after.st_ino != before.st_ino) {
    close(nfd);
    return throw_errno(env, ESTALE, "reopen");
  }
  return num(env, (double)nfd);
}

/* mknodat(dirfd, path, mode, dev): dev as the engine's makedev number. */
static napi_value js_mknodat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t mode;
  int64_t dev;
  char path[PATH_MAX];
  if (!get_args(env, info, &a, 4, "mknodat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &mode) || !arg_int(&a, 3, 0, SAFE_INT, &dev))
    return NULL;
  if (mknodat(dirfd, path, (mode_t)mode, (dev_t)dev) < 0) return throw_errno(env, errno, "mknodat");
  return undefined(env);
}

static napi_value js_mkdirat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t mode;
  char path[PATH_MAX];
  if (!get_args(env, info, &a, 3, "mkdirat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &mode))
    return NULL;
  if (mkdirat(dirfd, path, (mode_t)mode) < 0) return throw_errno(env, errno, "mkdirat");
  return undefined(env);
}

/* symlinkat(target, dirfd, path) */
static napi_value js_symlinkat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  char target[PATH_MAX], path[PATH_MAX];
  if (!get_args(env, info, &a, 3, "symlinkat") || !arg_path(&a, 0, target) || !arg_fd(&a, 1, &dirfd) ||
      !arg_path(&a, 2, path))
    return NULL;
  if (symlinkat(target, dirfd, path) < 0) return throw_errno(env, errno, "symlinkat");
  return undefined(env);
}

/* readlinkat(dirfd, path) -> Buffer. path "" reads the symlink an O_PATH fd refers to. */
static napi_value js_readlinkat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  char path[PATH_MAX], target[PATH_MAX + 1];
  if (!get_args(env, info, &a, 2, "readlinkat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path)) return NULL;
  ssize_t n = readlinkat(dirfd, path, target, sizeof target);
  if (n < 0) return throw_errno(env, errno, "readlinkat");
  if ((size_t)n >= sizeof target) return throw_errno(env, ENAMETOOLONG, "readlinkat");
  return buffer_copy(env, target, (size_t)n);
}

/* fchownat(dirfd, path, uid, gid, flags): -1 leaves an id unchanged. */
static napi_value js_fchownat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  int64_t uid, gid;
  uint32_t flags;
  char path[PATH_MAX];
  if (!get_args(env, info, &a, 5, "fchownat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_int(&a, 2, -1, 4294967295.0, &uid) || !arg_int(&a, 3, -1, 4294967295.0, &gid) ||
      !arg_u32(&a, 4, &flags))
    return NULL;
  if (fchownat(dirfd, path, (uid_t)uid, (gid_t)gid, (int)flags) < 0) return throw_errno(env, errno, "fchownat");
  return undefined(env);
}

/* fchmod(fd, mode) on a real (not O_PATH) fd. */
static napi_value js_fchmod(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  uint32_t mode;
  if (!get_args(env, info, &a, 2, "fchmod") || !arg_fd(&a, 0, &fd) || !arg_u32(&a, 1, &mode)) return NULL;
  if (fchmod(fd, (mode_t)mode) < 0) return throw_errno(env, errno, "fchmod");
  return undefined(env);
}

/*
 * fchmodat(dirfd, path, mode, flags): with flags (AT_SYMLINK_NOFOLLOW,
 * AT_EMPTY_PATH) this is fchmodat2 (Linux 6.6; ENOSYS before), which works
 * on an O_PATH fd with path "" and AT_EMPTY_PATH.
 */
static napi_value js_fchmodat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t mode, flags;
  char path[PATH_MAX];
  if (!get_args(env, info, &a, 4, "fchmodat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &mode) || !arg_u32(&a, 3, &flags))
    return NULL;
  long r = flags ? syscall(SYS_fchmodat2, dirfd, path, (mode_t)mode, (unsigned)flags)
                 : fchmodat(dirfd, path, (mode_t)mode, 0);
  if (r < 0) return throw_errno(env, errno, "fchmodat");
  return undefined(env);
}

/* A time argument pair (sec, nsec); nsec may be UTIME_NOW or UTIME_OMIT. */
static bool arg_timespec(args_t *a, size_t i, struct timespec *ts) {
  int64_t sec, nsec;
  if (!arg_int(a, i, -SAFE_INT, SAFE_INT, &sec) || !arg_int(a, i + 1, 0, (double)UTIME_NOW, &nsec)) return false;
  if (nsec >= 1000000000 && nsec != UTIME_NOW && nsec != UTIME_OMIT) return type_error(a, i + 1, "below 1e9, UTIME_NOW or UTIME_OMIT");
  ts->tv_sec = (time_t)sec;
  ts->tv_nsec = (long)nsec;
  return true;
}

/* utimensat(dirfd, path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, flags) */
static napi_value js_utimensat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t flags;
  struct timespec ts[2];
  char path[PATH_MAX];
  if (!get_args(env, info, &a, 7, "utimensat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_timespec(&a, 2, &ts[0]) || !arg_timespec(&a, 4, &ts[1]) || !arg_u32(&a, 6, &flags))
    return NULL;
  if (utimensat(dirfd, path, ts, (int)flags) < 0) return throw_errno(env, errno, "utimensat");
  return undefined(env);
}

/* renameat2(olddirfd, oldpath, newdirfd, newpath, flags) */
static napi_value js_renameat2(napi_env env, napi_callback_info info) {
  args_t a;
  int odir, ndir;
  uint32_t flags;
  char opath[PATH_MAX], npath[PATH_MAX];
  if (!get_args(env, info, &a, 5, "renameat2") || !arg_fd(&a, 0, &odir) || !arg_path(&a, 1, opath) ||
      !arg_fd(&a, 2, &ndir) || !arg_path(&a, 3, npath) || !arg_u32(&a, 4, &flags))
    return NULL;
  if (syscall(SYS_renameat2, odir, opath, ndir, npath, (unsigned)flags) < 0) return throw_errno(env, errno, "renameat2");
  return undefined(env);
}

/* linkat(olddirfd, oldpath, newdirfd, newpath, flags) */
static napi_value js_linkat(napi_env env, napi_callback_info info) {
  args_t a;
  int odir, ndir;
  uint32_t flags;
  char opath[PATH_MAX], npath[PATH_MAX];
  if (!get_args(env, info, &a, 5, "linkat") || !arg_fd(&a, 0, &odir) || !arg_path(&a, 1, opath) ||
      !arg_fd(&a, 2, &ndir) || !arg_path(&a, 3, npath) || !arg_u32(&a, 4, &flags))
    return NULL;
  if (linkat(odir, opath, ndir, npath, (int)flags) < 0) return throw_errno(env, errno, "linkat");
  return undefined(env);
}

/* unlinkat(dirfd, path, flags): AT_REMOVEDIR for directories. */
static napi_value js_unlinkat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t flags;
  char path[PATH_MAX];
  if (!get_args(env, info, &a, 3, "unlinkat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &flags))
    return NULL;
  if (unlinkat(dirfd, path, (int)flags) < 0) return throw_errno(env, errno, "unlinkat");
  return undefined(env);
}

/*
 * fstatat(dirfd, path, flags) -> every struct stat field, as numbers, plus the
 * birth time (0/0 where the filesystem keeps none), through statx(2): an
 * inode number reused after a free has a new birth time.
 */
static napi_value js_fstatat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t flags;
  char path[PATH_MAX];
  if (!get_args(env, info, &a, 3, "fstatat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &flags))
    return NULL;
  struct statx st;
  if (statx(dirfd, path, (int)flags | AT_STATX_SYNC_AS_STAT, STATX_BASIC_STATS | STATX_BTIME, &st) < 0)
    return throw_errno(env, errno, "fstatat");
  bool btime = (st.stx_mask & STATX_BTIME) != 0;
  napi_value o;
  if (napi_create_object(env, &o) != napi_ok) return NULL;
  /* st_ino and st_dev are u64; on Linux filesystems here they stay below 2^53. */
  if (!set_num(env, o, "dev", (double)makedev(st.stx_dev_major, st.stx_dev_minor)) ||
      !set_num(env, o, "ino", (double)st.stx_ino) || !set_num(env, o, "mode", st.stx_mode) ||
      !set_num(env, o, "nlink", st.stx_nlink) || !set_num(env, o, "uid", st.stx_uid) ||
      !set_num(env, o, "gid", st.stx_gid) ||
      !set_num(env, o, "rdev", (double)makedev(st.stx_rdev_major, st.stx_rdev_minor)) ||
      !set_num(env, o, "size", (double)st.stx_size) || !set_num(env, o, "blksize", st.stx_blksize) ||
      !set_num(env, o, "blocks", (double)st.stx_blocks) ||
      !set_num(env, o, "atime", (double)st.stx_atime.tv_sec) || !set_num(env, o, "atimeNsec", st.stx_atime.tv_nsec) ||
      !set_num(env, o, "mtime", (double)st.stx_mtime.tv_sec) || !set_num(env, o, "mtimeNsec", st.stx_mtime.tv_nsec) ||
      !set_num(env, o, "ctime", (double)st.stx_ctime.tv_sec) || !set_num(env, o, "ctimeNsec", st.stx_ctime.tv_nsec) ||
      !set_num(env, o, "btime", btime ? (double)st.stx_btime.tv_sec : 0) ||
      !set_num(env, o, "btimeNsec", btime ? st.stx_btime.tv_nsec : 0)) {
    napi_failed(env);
    return NULL;
  }
  return o;
}

/* fstatfs(fd) -> struct statfs (works on O_PATH fds). */
static napi_value js_fstatfs(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  if (!get_args(env, info, &a, 1, "fstatfs") || !arg_fd(&a, 0, &fd)) return NULL;
  struct statfs s;
  if (fstatfs(fd, &s) < 0) return throw_errno(env, errno, "fstatfs");
  napi_value o;
  if (napi_create_object(env, &o) != napi_ok) return NULL;
  if (!set_num(env, o, "type", (double)(unsigned long)s.f_type) || !set_num(env, o, "bsize", (double)s.f_bsize) ||
      !set_num(env, o, "frsize", (double)s.f_frsize) || !set_num(env, o, "blocks", (double)s.f_blocks) ||
      !set_num(env, o, "bfree", (double)s.f_bfree) || !set_num(env, o, "bavail", (double)s.f_bavail) ||
      !set_num(env, o, "files", (double)s.f_files) || !set_num(env, o, "ffree", (double)s.f_ffree) ||
      !set_num(env, o, "namemax", (double)s.f_namelen) || !set_num(env, o, "flags", (double)s.f_flags)) {
    napi_failed(env);
    return NULL;
  }
  return o;
}

/*
 * readdir(dirfd) -> [{ name: Buffer, type: d_type, ino }] without "." and
 * "..". Reads through a fresh open file description of the directory
 * (openat(dirfd, ".")), so dirfd may be O_PATH and its offset is untouched.
 */
static napi_value js_readdir(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  if (!get_args(env, info, &a, 1, "readdir") || !arg_fd(&a, 0, &dirfd)) return NULL;
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "readdir");
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "readdir");
  }
  napi_value list;
  if (napi_create_array(env, &list) != napi_ok) {
    closedir(d);
    napi_failed(env);
    return NULL;
  }
  uint32_t n = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (e == NULL) {
      int err = errno;
      closedir(d);
      if (err != 0) return throw_errno(env, err, "readdir");
      return list;
    }
    if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || (e->d_name[1] == '.' && e->d_name[2] == '\0'))) continue;
    napi_value o, name;
    void *dst;
    if (napi_create_object(env, &o) != napi_ok ||
        napi_create_buffer_copy(env, strlen(e->d_name), e->d_name, &dst, &name) != napi_ok ||
        napi_set_named_property(env, o, "name", name) != napi_ok || !set_num(env, o, "type", e->d_type) ||
        !set_num(env, o, "ino", (double)e->d_ino) || napi_set_element(env, list, n++, o) != napi_ok) {
      closedir(d);
      napi_failed(env);
      return NULL;
    }
  }
}

/* ---- extended attributes ----
 * Two families: f*xattr on a real fd, and *xattrat (Linux 6.13) on
 * (dirfd, path, AT_* flags). Neither accepts an O_PATH fd (6.18 answers
 * EBADF even for "" + AT_EMPTY_PATH), so DirLayer names an O_PATH fd's inode
 * as the magic link "/proc/self/fd/N" with AT_FDCWD, followed: the kernel
 * jumps to exactly that inode (a symlink itself, not its target).
 * Values are at most 64 KiB (XATTR_SIZE_MAX); lists at most 64 KiB.
 * get* and list* size first, then fetch, retrying when the value grew (ERANGE).
 */

typedef ssize_t (*xget_fn)(void *ctx, void *buf, size_t size);

static napi_value xget(napi_env env, xget_fn get, void *ctx, const char *syscall, size_t max) {
  for (int attempt = 0; attempt < 4; attempt++) {
    ssize_t size = get(ctx, NULL, 0);
    if (size < 0) return throw_errno(env, errno, syscall);
    if ((size_t)size > max) return throw_errno(env, E2BIG, syscall);
    char *buf = malloc((size_t)size + 1);
    if (buf == NULL) return throw_errno(env, ENOMEM, syscall);
    ssize_t got = get(ctx, buf, (size_t)size);
    if (got < 0) {
      int err = errno;
      free(buf);
      if (err == ERANGE) continue;
      return throw_errno(env, err, syscall);
    }
    napi_value v = buffer_copy(env, buf, (size_t)got);
    free(buf);
    return v;
  }
  return throw_errno(env, ERANGE, syscall);
}

/* A NUL-separated name list -> [Buffer]. */
static napi_value split_names(napi_env env, napi_value joined) {
  void *data;
  size_t len;
  napi_value list;
  if (joined == NULL || napi_get_buffer_info(env, joined, &data, &len) != napi_ok ||
      napi_create_array(env, &list) != napi_ok)
    return NULL;
  const char *p = data, *end = p + len;
  uint32_t n = 0;
  while (p < end) {
    const char *z = memchr(p, '\0', (size_t)(end - p));
    size_t l = z ? (size_t)(z - p) : (size_t)(end - p);
    if (l > 0) {
      napi_value name = buffer_copy(env, p, l);
      if (name == NULL || napi_set_element(env, list, n++, name) != napi_ok) return NULL;
    }
    p += l + 1;
  }
  return list;
}

typedef struct {
  int fd;
  const char *path;
  unsigned at_flags;
  const char *name;
} xctx_t;

static ssize_t fget_cb(void *c, void *buf, size_t size) {
  xctx_t *x = c;
  return fgetxattr(x->fd, x->name, buf, size);
}

static ssize_t flist_cb(void *c, void *buf, size_t size) {
  xctx_t *x = c;
  return flistxattr(x->fd, buf, size);
}

/*
 * Before Linux 6.13 the *xattrat calls are ENOSYS; an absolute path (or one
 * relative to AT_FDCWD) then goes through the path calls, l* when
 * AT_SYMLINK_NOFOLLOW.
 */
static bool xattrat_fallback(int dirfd, const char *path, unsigned at_flags) {
  return errno == ENOSYS && path[0] != '\0' && (dirfd == AT_FDCWD || path[0] == '/') &&
         (at_flags & ~(unsigned)AT_SYMLINK_NOFOLLOW) == 0;
}

static ssize_t getat_cb(void *c, void *buf, size_t size) {
  xctx_t *x = c;
  struct sifuse_xattr_args args = {(uint64_t)(uintptr_t)buf, (uint32_t)size, 0};
  ssize_t r = syscall(SYS_getxattrat, x->fd, x->path, x->at_flags, x->name, &args, sizeof args);
  if (r < 0 && xattrat_fallback(x->fd, x->path, x->at_flags))
    r = (x->at_flags & AT_SYMLINK_NOFOLLOW) ? lgetxattr(x->path, x->name, buf, size) : getxattr(x->path, x->name, buf, size);
  return r;
}

static ssize_t listat_cb(void *c, void *buf, size_t size) {
  xctx_t *x = c;
  ssize_t r = syscall(SYS_listxattrat, x->fd, x->path, x->at_flags, buf, size);
  if (r < 0 && xattrat_fallback(x->fd, x->path, x->at_flags))
    r = (x->at_flags & AT_SYMLINK_NOFOLLOW) ? llistxattr(x->path, buf, size) : listxattr(x->path, buf, size);
  return r;
}

/* fgetxattr(fd, name) -> Buffer (ENODATA when absent). */
static napi_value js_fgetxattr(napi_env env, napi_callback_info info) {
  args_t a;
  char name[XATTR_NAME_BUF];
  xctx_t x = {0};
  if (!get_args(env, info, &a, 2, "fgetxattr") || !arg_fd(&a, 0, &x.fd) || !arg_xname(&a, 1, name)) return NULL;
  x.name = name;
  return xget(env, fget_cb, &x, "fgetxattr", XATTR_VALUE_MAX);
}

static napi_value js_flistxattr(napi_env env, napi_callback_info info) {
  args_t a;
  xctx_t x = {0};
  if (!get_args(env, info, &a, 1, "flistxattr") || !arg_fd(&a, 0, &x.fd)) return NULL;
  return split_names(env, xget(env, flist_cb, &x, "flistxattr", XATTR_LIST_MAX_));
}

/* fsetxattr(fd, name, value, flags): XATTR_CREATE / XATTR_REPLACE. */
static napi_value js_fsetxattr(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  char name[XATTR_NAME_BUF];
  void *value;
  size_t len;
  uint32_t flags;
  if (!get_args(env, info, &a, 4, "fsetxattr") || !arg_fd(&a, 0, &fd) || !arg_xname(&a, 1, name) ||
      !arg_bytes(&a, 2, &value, &len) || !arg_u32(&a, 3, &flags))
    return NULL;
  if (len > XATTR_VALUE_MAX) return throw_errno(env, E2BIG, "fsetxattr");
  if (fsetxattr(fd, name, value, len, (int)flags) < 0) return throw_errno(env, errno, "fsetxattr");
  return undefined(env);
}

static napi_value js_fremovexattr(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  char name[XATTR_NAME_BUF];
  if (!get_args(env, info, &a, 2, "fremovexattr") || !arg_fd(&a, 0, &fd) || !arg_xname(&a, 1, name)) return NULL;
  if (fremovexattr(fd, name) < 0) return throw_errno(env, errno, "fremovexattr");
  return undefined(env);
}

/* getxattrat(dirfd, path, atFlags, name) -> Buffer (ENODATA when absent). */
static napi_value js_getxattrat(napi_env env, napi_callback_info info) {
  args_t a;
  char path[PATH_MAX], name[XATTR_NAME_BUF];
  xctx_t x = {0};
  if (!get_args(env, info, &a, 4, "getxattrat") || !arg_fd(&a, 0, &x.fd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &x.at_flags) || !arg_xname(&a, 3, name))
    return NULL;
  x.path = path;
  x.name = name;
  return xget(env, getat_cb, &x, "getxattrat", XATTR_VALUE_MAX);
}

static napi_value js_listxattrat(napi_env env, napi_callback_info info) {
  args_t a;
  char path[PATH_MAX];
  xctx_t x = {0};
  if (!get_args(env, info, &a, 3, "listxattrat") || !arg_fd(&a, 0, &x.fd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &x.at_flags))
    return NULL;
  x.path = path;
  return split_names(env, xget(env, listat_cb, &x, "listxattrat", XATTR_LIST_MAX_));
}

/* setxattrat(dirfd, path, atFlags, name, value, flags) */
static napi_value js_setxattrat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t at_flags, flags;
  char path[PATH_MAX], name[XATTR_NAME_BUF];
  void *value;
  size_t len;
  if (!get_args(env, info, &a, 6, "setxattrat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &at_flags) || !arg_xname(&a, 3, name) || !arg_bytes(&a, 4, &value, &len) ||
      !arg_u32(&a, 5, &flags))
    return NULL;
  if (len > XATTR_VALUE_MAX) return throw_errno(env, E2BIG, "setxattrat");
  struct sifuse_xattr_args args = {(uint64_t)(uintptr_t)value, (uint32_t)len, flags};
  long r = syscall(SYS_setxattrat, dirfd, path, at_flags, name, &args, sizeof args);
  if (r < 0 && xattrat_fallback(dirfd, path, at_flags))
    r = (at_flags & AT_SYMLINK_NOFOLLOW) ? lsetxattr(path, name, value, len, (int)flags)
                                         : setxattr(path, name, value, len, (int)flags);
  if (r < 0) return throw_errno(env, errno, "setxattrat");
  return undefined(env);
}

static napi_value js_removexattrat(napi_env env, napi_callback_info info) {
  args_t a;
  int dirfd;
  uint32_t at_flags;
  char path[PATH_MAX], name[XATTR_NAME_BUF];
  if (!get_args(env, info, &a, 4, "removexattrat") || !arg_fd(&a, 0, &dirfd) || !arg_path(&a, 1, path) ||
      !arg_u32(&a, 2, &at_flags) || !arg_xname(&a, 3, name))
    return NULL;
  long r = syscall(SYS_removexattrat, dirfd, path, at_flags, name);
  if (r < 0 && xattrat_fallback(dirfd, path, at_flags))
    r = (at_flags & AT_SYMLINK_NOFOLLOW) ? lremovexattr(path, name) : removexattr(path, name);
  if (r < 0) return throw_errno(env, errno, "removexattrat");
  return undefined(env);
}

/* ---- file data ---- */

/* lseek(fd, offset, whence) -> offset (SEEK_DATA/SEEK_HOLE past the data: ENXIO). */
static napi_value js_lseek(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  int64_t off;
  int32_t whence;
  if (!get_args(env, info, &a, 3, "lseek") || !arg_fd(&a, 0, &fd) || !arg_int(&a, 1, -SAFE_INT, SAFE_INT, &off) ||
      !arg_i32(&a, 2, &whence))
    return NULL;
  off_t r = lseek(fd, (off_t)off, whence);
  if (r < 0) return throw_errno(env, errno, "lseek");
  return num(env, (double)r);
}

/* fallocate(fd, mode, offset, length) */
static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  int32_t mode;
  int64_t off, len;
  if (!get_args(env, info, &a, 4, "fallocate") || !arg_fd(&a, 0, &fd) || !arg_i32(&a, 1, &mode) ||
      !arg_int(&a, 2, 0, SAFE_INT, &off) || !arg_int(&a, 3, 0, SAFE_INT, &len))
    return NULL;
  if (fallocate(fd, mode, (off_t)off, (off_t)len) < 0) return throw_errno(env, errno, "fallocate");
  return undefined(env);
}

/* syncfs(fd): everything on the filesystem holding fd is durable. */
static napi_value js_syncfs(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  if (!get_args(env, info, &a, 1, "syncfs") || !arg_fd(&a, 0, &fd)) return NULL;
  if (syncfs(fd) < 0) return throw_errno(env, errno, "syncfs");
  return undefined(env);
}

/*
 * cloexecFrom(lowfd): marks every descriptor from lowfd up close-on-exec
 * (close_range CLOSE_RANGE_CLOEXEC, Linux 5.11; before, each one listed in
 * /proc/self/fd), so a child started next inherits only what it is given.
 */
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
static napi_value js_cloexec_from(napi_env env, napi_callback_info info) {
  args_t a;
  int low;
  if (!get_args(env, info, &a, 1, "cloexecFrom") || !arg_fd(&a, 0, &low)) return NULL;
  if (syscall(SYS_close_range, (unsigned)low, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return undefined(env);
  if (errno != ENOSYS && errno != EINVAL) return throw_errno(env, errno, "cloexecFrom");
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return throw_errno(env, errno, "cloexecFrom");
  int own = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*end != '\0' || end == e->d_name || fd < low || fd == own) continue;
    int flags = fcntl((int)fd, F_GETFD);
    if (flags >= 0) fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
  }
  closedir(d);
  return undefined(env);
}

/* ---- OFD byte-range locks (fcntl F_OFD_*; length 0 = to the end of file) ---- */

static bool arg_range(args_t *a, size_t i, struct flock *fl) {
  int64_t start, len;
  if (!arg_int(a, i, 0, SAFE_INT, &start) || !arg_int(a, i + 1, 0, SAFE_INT, &len)) return false;
  fl->l_whence = SEEK_SET;
  fl->l_start = (off_t)start;
  fl->l_len = (off_t)len;
  fl->l_pid = 0; /* must be 0 for OFD locks */
  return true;
}

/* ofdLock(fd, start, length, exclusive, wait = false) -> true, or false when held elsewhere. */
static napi_value js_ofd_lock(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  bool exclusive, wait;
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  if (!get_args(env, info, &a, 4, "ofdLock") || !arg_fd(&a, 0, &fd) || !arg_range(&a, 1, &fl) ||
      !arg_bool(&a, 3, false, &exclusive) || !arg_bool(&a, 4, false, &wait))
    return NULL;
  fl.l_type = exclusive ? F_WRLCK : F_RDLCK;
  int r;
  do {
    r = fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
  } while (r < 0 && errno == EINTR && wait);
  if (r < 0) {
    if (!wait && (errno == EAGAIN || errno == EACCES)) return boolean(env, false);
    return throw_errno(env, errno, "ofdLock");
  }
  return boolean(env, true);
}

static napi_value js_ofd_unlock(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  if (!get_args(env, info, &a, 3, "ofdUnlock") || !arg_fd(&a, 0, &fd) || !arg_range(&a, 1, &fl)) return NULL;
  fl.l_type = F_UNLCK;
  if (fcntl(fd, F_OFD_SETLK, &fl) < 0) return throw_errno(env, errno, "ofdUnlock");
  return undefined(env);
}

/*
 * ofdGetLock(fd, start, length, exclusive) -> null when a lock of that kind
 * could be taken, else { exclusive, start, length, pid } of one conflicting
 * lock (pid -1 for an OFD lock, the owner's pid for a classic POSIX lock).
 */
static napi_value js_ofd_getlock(napi_env env, napi_callback_info info) {
  args_t a;
  int fd;
  bool exclusive;
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  if (!get_args(env, info, &a, 4, "ofdGetLock") || !arg_fd(&a, 0, &fd) || !arg_range(&a, 1, &fl) ||
      !arg_bool(&a, 3, false, &exclusive))
    return NULL;
  fl.l_type = exclusive ? F_WRLCK : F_RDLCK;
  if (fcntl(fd, F_OFD_GETLK, &fl) < 0) return throw_errno(env, errno, "ofdGetLock");
  napi_value o;
  if (fl.l_type == F_UNLCK) {
    napi_get_null(env, &o);
    return o;
  }
  if (napi_create_object(env, &o) != napi_ok || napi_set_named_property(env, o, "exclusive", boolean(env, fl.l_type == F_WRLCK)) != napi_ok ||
      !set_num(env, o, "start", (double)fl.l_start) || !set_num(env, o, "length", (double)fl.l_len) ||
      !set_num(env, o, "pid", (double)fl.l_pid)) {
    napi_failed(env);
    return NULL;
  }
  return o;
}

/* ---- module ---- */

typedef struct {
  const char *name;
  double value;
} constant_t;

static const constant_t CONSTANTS[] = {
    {"O_RDONLY", O_RDONLY}, {"O_WRONLY", O_WRONLY}, {"O_RDWR", O_RDWR}, {"O_CREAT", O_CREAT},
    {"O_EXCL", O_EXCL}, {"O_TRUNC", O_TRUNC}, {"O_APPEND", O_APPEND}, {"O_NONBLOCK", O_NONBLOCK},
    {"O_DIRECTORY", O_DIRECTORY}, {"O_NOFOLLOW", O_NOFOLLOW}, {"O_PATH", O_PATH}, {"O_NOATIME", O_NOATIME},
    {"O_TMPFILE", O_TMPFILE}, {"O_NOCTTY", O_NOCTTY},
    {"RESOLVE_NO_XDEV", RESOLVE_NO_XDEV}, {"RESOLVE_NO_MAGICLINKS", RESOLVE_NO_MAGICLINKS},
    {"RESOLVE_NO_SYMLINKS", RESOLVE_NO_SYMLINKS}, {"RESOLVE_BENEATH", RESOLVE_BENEATH},
    {"RESOLVE_IN_ROOT", RESOLVE_IN_ROOT},
    {"AT_FDCWD", AT_FDCWD}, {"AT_SYMLINK_NOFOLLOW", AT_SYMLINK_NOFOLLOW}, {"AT_REMOVEDIR", AT_REMOVEDIR},
    {"AT_SYMLINK_FOLLOW", AT_SYMLINK_FOLLOW}, {"AT_EMPTY_PATH", AT_EMPTY_PATH},
    {"RENAME_NOREPLACE", RENAME_NOREPLACE}, {"RENAME_EXCHANGE", RENAME_EXCHANGE}, {"RENAME_WHITEOUT", RENAME_WHITEOUT},
    {"UTIME_NOW", UTIME_NOW}, {"UTIME_OMIT", UTIME_OMIT},
    {"SEEK_SET", SEEK_SET}, {"SEEK_CUR", SEEK_CUR}, {"SEEK_END", SEEK_END}, {"SEEK_DATA", SEEK_DATA}, {"SEEK_HOLE", SEEK_HOLE},
    {"XATTR_CREATE", XATTR_CREATE}, {"XATTR_REPLACE", XATTR_REPLACE},
    {"FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE}, {"FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE},
    {"DT_UNKNOWN", DT_UNKNOWN}, {"DT_FIFO", DT_FIFO}, {"DT_CHR", DT_CHR}, {"DT_DIR", DT_DIR}, {"DT_BLK", DT_BLK},
    {"DT_REG", DT_REG}, {"DT_LNK", DT_LNK}, {"DT_SOCK", DT_SOCK},
};

#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

static napi_value init(napi_env env, napi_value exports) {
  static const napi_property_descriptor fns[] = {
      FN("openat2", js_openat2), FN("reopen", js_reopen), FN("mknodat", js_mknodat), FN("mkdirat", js_mkdirat),
      FN("symlinkat", js_symlinkat), FN("readlinkat", js_readlinkat), FN("fchownat", js_fchownat),
      FN("fchmod", js_fchmod), FN("fchmodat", js_fchmodat), FN("utimensat", js_utimensat),
      FN("renameat2", js_renameat2), FN("linkat", js_linkat), FN("unlinkat", js_unlinkat),
      FN("fstatat", js_fstatat), FN("fstatfs", js_fstatfs), FN("readdir", js_readdir),
      FN("fgetxattr", js_fgetxattr), FN("fsetxattr", js_fsetxattr), FN("flistxattr", js_flistxattr),
      FN("fremovexattr", js_fremovexattr), FN("getxattrat", js_getxattrat), FN("setxattrat", js_setxattrat),
      FN("listxattrat", js_listxattrat), FN("removexattrat", js_removexattrat), FN("lseek", js_lseek),
      FN("fallocate", js_fallocate), FN("syncfs", js_syncfs), FN("ofdLock", js_ofd_lock), FN("ofdUnlock", js_ofd_unlock),
      FN("ofdGetLock", js_ofd_getlock), FN("cloexecFrom", js_cloexec_from),
  };
  if (napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns) != napi_ok) return NULL;
  napi_value constants;
  if (napi_create_object(env, &constants) != napi_ok) return NULL;
  for (size_t i = 0; i < sizeof CONSTANTS / sizeof CONSTANTS[0]; i++)
    if (!set_num(env, constants, CONSTANTS[i].name, CONSTANTS[i].value)) return NULL;
  if (napi_set_named_property(env, exports, "constants", constants) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
