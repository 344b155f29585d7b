/*
 * sifuse_block: one SquashFS block read from an image file, and decompressed
 * when it is zlib- or zstd-compressed, as one job on libuv's thread pool
 * (src/native/block.ts is the typed face).
 *
 *   readBlock(fd, position, length, out, codec) -> Promise<number>
 *
 * pread()s exactly `length` bytes at `position` of `fd`. With codec 0
 * (stored) they land in out[0, length) and the promise gives `length`; with
 * codec 1 (zlib) or 2 (zstd) they land in a per-thread scratch buffer and are
 * decompressed into out, and the promise gives the bytes produced. zlib is an
 * RFC 1950 stream (what squashfs-tools' gzip compressor writes), inflated by
 * libdeflate (whole-buffer, the block and its output both at hand): 2.4x
 * zlib's inflate here (759 vs 313 MB/s over 128 KiB level-9 blocks of the
 * bench rootfs's binaries). zstd is one or more zstd frames (squashfs-tools'
 * zstd_wrapper writes one per block), decompressed by ZSTD_decompressDCtx.
 *
 * Invariants:
 * - Output never exceeds out.length: a block that would expand further is
 *   refused (code ETOOBIG), so a decompression bomb costs one block.
 * - Garbage, a truncated stream or a bad checksum rejects with code EZDATA;
 *   bytes after the end of a zlib stream are ignored (as zlib's inflate
 *   does), after the last zstd frame they are EZDATA (as libzstd says);
 *   a read past end of file with EOF; a failed pread with its errno name.
 *   No input can crash the process.
 * - Each pool thread owns one libdeflate decompressor, one zstd context and
 *   one input buffer of 1 MiB, created on its first job that needs them and
 *   kept for the life of the thread: no two jobs share them, and the cost is
 *   bounded by the pool size.
 * - `out` is held by a reference until the job completes; the caller keeps
 *   `fd` open until then (src/io/file-region.ts counts jobs in flight).
 * Bounds checks against the image region are the caller's (TypeScript).
 *
 *   readCached(fd, position, length, out) -> number
 *
 * The same pread done at once on the calling thread, but only from the page
 * cache (preadv2 RWF_NOWAIT): it returns how many leading bytes it got (0 when
 * the first page is not cached, or the kernel does not support the flag), and
 * never blocks on the disk. A sequential reader of stored blocks mostly finds
 * them cached (the host's read-ahead), and skips the thread-pool round trip.
 *
 * Loading this addon also tunes glibc malloc (see tune_malloc).
 */
#include <node_api.h>
#include <libdeflate.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_LENGTH (16u << 20) /* no SquashFS block is near this */
#define KEPT_INPUT (1u << 20)  /* SQUASHFS_FILE_MAX_SIZE: the largest block size */
#define SAFE_INT 9007199254740991.0

enum outcome { OK, SYS_ERROR, SHORT_FILE, Z_BAD, Z_TOO_BIG, Z_NOMEM };

struct job {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref out_ref;
  int fd;
  int codec;
  int64_t position;
  uint32_t length;
  uint8_t *out;
  size_t out_len;
  /* results */
  enum outcome outcome;
  int err;
  size_t produced;
};

/* readBlock's codec argument. */
enum { CODEC_STORED = 0, CODEC_ZLIB = 1, CODEC_ZSTD = 2 };

static __thread struct libdeflate_decompressor *thread_z;
static __thread ZSTD_DCtx *thread_zstd;
static __thread uint8_t *thread_in;
static __thread size_t thread_in_cap;

static int pread_all(int fd, uint8_t *buf, size_t len, int64_t pos, struct job *j) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, (off_t)(pos + (int64_t)done));
    if (n < 0) {
      if (errno == EINTR) continue;
      j->outcome = SYS_ERROR;
      j->err = errno;
      return -1;
    }
    if (n == 0) {
      j->outcome = SHORT_FILE;
      return -1;
    }
    done += (size_t)n;
  }
  return 0;
}

static void inflate_into(struct job *j, uint8_t *in, size_t in_len) {
  if (thread_z == NULL && (thread_z = libdeflate_alloc_decompressor()) == NULL) {
    j->outcome = Z_NOMEM;
    return;
  }
  size_t produced = 0;
  switch (libdeflate_zlib_decompress(thread_z, in, in_len, j->out, j->out_len, &produced)) {
    case LIBDEFLATE_SUCCESS:
      j->produced = produced;
      j->outcome = OK;
      break;
    case LIBDEFLATE_INSUFFICIENT_SPACE:
      j->outcome = Z_TOO_BIG;
      break;
    default:
      j->outcome = Z_BAD;
      break;
  }
}

static void unzstd_into(struct job *j, uint8_t *in, size_t in_len) {
  if (thread_zstd == NULL && (thread_zstd = ZSTD_createDCtx()) == NULL) {
    j->outcome = Z_NOMEM;
    return;
  }
  size_t r = ZSTD_decompressDCtx(thread_zstd, j->out, j->out_len, in, in_len);
  if (!ZSTD_isError(r)) {
    j->produced = r;
    j->outcome = OK;
    return;
  }
  switch (ZSTD_getErrorCode(r)) {
    case ZSTD_error_dstSize_tooSmall:
      j->outcome = Z_TOO_BIG;
      break;
    case ZSTD_error_memory_allocation:
      j->outcome = Z_NOMEM;
      break;
    default:
      j->outcome = Z_BAD;
      break;
  }
}

static void execute(napi_env env, void *data) {
  (void)env;
  struct job *j = data;
  if (j->codec == CODEC_STORED) {
    if (pread_all(j->fd, j->out, j->length, j->position, j) == 0) {
      j->produced = j->length;
      j->outcome = OK;
    }
    return;
  }
  /* Input past the largest SquashFS block (only a hostile image claims one)
   * gets a buffer of its own for this job, so the kept one stays <= 1 MiB. */
  uint8_t *in = thread_in;
  if (j->length > KEPT_INPUT) {
    in = malloc(j->length);
  } else if (thread_in_cap < j->length) {
    in = realloc(thread_in, KEPT_INPUT);
    if (in != NULL) {
      thread_in = in;
      thread_in_cap = KEPT_INPUT;
    }
  }
  if (in == NULL) {
    j->outcome = Z_NOMEM;
    return;
  }
  if (pread_all(j->fd, in, j->length, j->position, j) == 0) {
    if (j->codec == CODEC_ZSTD) unzstd_into(j, in, j->length);
    else inflate_into(j, in, j->length);
  }
  if (in != thread_in) free(in);
}

static napi_value error_value(napi_env env, const char *code, const char *msg, int err) {
  napi_value ecode, emsg, error, eno;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &ecode) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &emsg) != napi_ok ||
      napi_create_error(env, ecode, emsg, &error) != napi_ok)
    return NULL;
  if (err != 0 && (napi_create_int32(env, err, &eno) != napi_ok || napi_set_named_property(env, error, "errno", eno) != napi_ok))
    return NULL;
  return error;
}

static void complete(napi_env env, napi_status status, void *data) {
  struct job *j = data;
  napi_value result = NULL;
  int ok = 0;
  char msg[160];
  if (status != napi_ok) {
    result = error_value(env, "ECANCELED", "block read was cancelled", 0);
  } else {
    switch (j->outcome) {
      case OK:
        ok = napi_create_uint32(env, (uint32_t)j->produced, &result) == napi_ok;
        break;
      case SYS_ERROR: {
        const char *name = strerrorname_np(j->err);
        snprintf(msg, sizeof msg, "%s: %s, pread", name ? name : "EIO", strerror(j->err));
        result = error_value(env, name ? name : "EIO", msg, j->err);
        break;
      }
      case SHORT_FILE:
        result = error_value(env, "EOF", "the file ends inside the block", 0);
        break;
      case Z_BAD:
        result = error_value(env, "EZDATA",
                             j->codec == CODEC_ZSTD ? "invalid zstd frame (corrupt, truncated or bad checksum)"
                                                    : "invalid zlib stream (corrupt, truncated or bad checksum)",
                             0);
        break;
      case Z_TOO_BIG:
        result = error_value(env, "ETOOBIG", "the block expands past its buffer", 0);
        break;
      case Z_NOMEM:
        result = error_value(env, "ENOMEM", "no memory for the decompressor", ENOMEM);
        break;
    }
  }
  if (result == NULL) napi_get_undefined(env, &result);
  if (ok) napi_resolve_deferred(env, j->deferred, result);
  else napi_reject_deferred(env, j->deferred, result);
  napi_delete_reference(env, j->out_ref);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value type_error(napi_env env, const char *what) {
  char msg[96];
  snprintf(msg, sizeof msg, "sifuse_block: %s", what);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/* argv[0..2] as (fd, position, length); false (with a TypeError thrown) if any is not one. */
static bool get_range(napi_env env, napi_value *argv, int32_t *fd, double *position, double *length) {
  if (napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0) {
    type_error(env, "fd must be a descriptor");
    return false;
  }
  if (napi_get_value_double(env, argv[1], position) != napi_ok || !(*position >= 0 && *position <= SAFE_INT) ||
      *position != (double)(int64_t)*position) {
    type_error(env, "position must be a safe non-negative integer");
    return false;
  }
  if (napi_get_value_double(env, argv[2], length) != napi_ok || !(*length >= 0 && *length <= MAX_LENGTH) ||
      *length != (double)(uint32_t)*length) {
    type_error(env, "length must be an integer of at most 16 MiB");
    return false;
  }
  return true;
}

static napi_value js_read_block(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5)
    return type_error(env, "needs (fd, position, length, out, codec)");
  int32_t fd, codec;
  double position, length;
  bool is_buffer = false;
  void *out;
  size_t out_len;
  if (!get_range(env, argv, &fd, &position, &length)) return NULL;
  if (napi_is_buffer(env, argv[3], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[3], &out, &out_len) != napi_ok)
    return type_error(env, "out must be a Buffer");
  if (napi_get_value_int32(env, argv[4], &codec) != napi_ok || codec < CODEC_STORED || codec > CODEC_ZSTD)
    return type_error(env, "codec must be 0 (stored), 1 (zlib) or 2 (zstd)");
  if (codec == CODEC_STORED && out_len < (size_t)length) return type_error(env, "out is shorter than length");
  if (out_len > UINT32_MAX) return type_error(env, "out is too large");

  struct job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    napi_throw_error(env, "ENOMEM", "sifuse_block: out of memory");
    return NULL;
  }
  j->fd = fd;
  j->codec = codec;
  j->position = (int64_t)position;
  j->length = (uint32_t)length;
  j->out = out;
  j->out_len = out_len;
  napi_value promise, name;
  if (napi_create_reference(env, argv[3], 1, &j->out_ref) != napi_ok) {
    free(j);
    return NULL;
  }
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "sifuse.readBlock", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, j, &j->work) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    /* Only reachable when N-API itself fails; the promise (if made) is dropped. */
    napi_delete_reference(env, j->out_ref);
    free(j);
    napi_throw_error(env, "ERR_NAPI", "sifuse_block: could not queue the read");
    return NULL;
  }
  return promise;
}

static napi_value js_read_cached(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t fd;
  double position, length;
  bool is_buffer = false;
  void *out;
  size_t out_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4)
    return type_error(env, "readCached needs (fd, position, length, out)");
  if (!get_range(env, argv, &fd, &position, &length)) return NULL;
  if (napi_is_buffer(env, argv[3], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[3], &out, &out_len) != napi_ok || out_len < (size_t)length)
    return type_error(env, "out must be a Buffer of at least length bytes");
  size_t done = 0;
  while (done < (size_t)length) {
    struct iovec iov = {(uint8_t *)out + done, (size_t)length - done};
    ssize_t n = preadv2(fd, &iov, 1, (off_t)position + (off_t)done, RWF_NOWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* EAGAIN (not cached), EOPNOTSUPP, EOF, or an error the slow path reports */
    done += (size_t)n;
  }
  napi_value result;
  if (napi_create_uint32(env, (uint32_t)done, &result) != napi_ok) return NULL;
  return result;
}

/*
 * Block buffers of 128 KiB-1 MiB come and go at every cold read. With glibc's
 * defaults each was a fresh mmap or sat at the heap top that free() trims, so
 * every one page-faulted in again: a cold 1 GiB dd cost 100,000+ minor faults
 * and most of the daemon's system time (14,000 with these settings). Chunks
 * up to 4 MiB come from the heap, and up to 64 MiB free at its top is kept.
 * The peak (the RSS that matters) is unchanged: kept memory was touched.
 */
static void tune_malloc(void) {
  static int done;
  if (done) return;
  done = 1;
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor fns[] = {
      {"readBlock", NULL, js_read_block, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readCached", NULL, js_read_cached, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, 2, fns) != napi_ok) return NULL;
  tune_malloc();
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
