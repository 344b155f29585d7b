/*
 * sifuse_fuse: the FUSE session on libfuse3's low-level API, its /dev/fuse fd
 * polled on the libuv loop; every request is handed to JavaScript
 * (src/native/fuse.ts is the typed face, src/fuse the adapter).
 *
 * Threading: the fd is O_NONBLOCK and watched by a uv_poll_t on Node's
 * loop; when readable, requests are received and processed on the JS thread
 * until EAGAIN, each low-level op calling the one JS dispatch function with a
 * request handle (and, where waking up is slow, for a few more batches that
 * come within microseconds: see the spin above on_readable). JS replies
 * whenever it likes (reply* below), on the JS thread, with one exception:
 * replyFdAsync hands its request to a libuv pool thread, which writes the
 * reply (libfuse's replies are thread-safe) and touches nothing else of the
 * session. js_unmount waits for those jobs before the session goes (s->jobs,
 * under s->lock).
 *
 * Invariants:
 * - A request handle is a number naming a slot of the in-flight table (one
 *   per JS thread: struct table) and that slot's generation, so it is
 *   answered at most once: the reply frees the slot and bumps its
 *   generation, and a second reply (or any stale or made-up number) throws.
 *   No GC object per request: fuse.ts answers every request whose handler
 *   settles (EIO when it settles without answering).
 * - A slot never outlives its session's struct: js_unmount detaches the
 *   session's slots (s = NULL), so a reply after unmount is dropped, never
 *   a use-after-free.
 * - No pool-thread reply outlives the libfuse session: each is counted in
 *   s->jobs from when it is queued until it is written, and the session is
 *   unmounted and destroyed only at zero.
 */
#include <node_api.h>
#include <uv.h>
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/fuse.h>

enum op {
  OP_INIT, OP_LOOKUP, OP_FORGET, OP_FORGET_MULTI, OP_GETATTR, OP_SETATTR, OP_READLINK,
  OP_MKNOD, OP_MKDIR, OP_UNLINK, OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN,
  OP_READ, OP_WRITE, OP_FLUSH, OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIRPLUS,
  OP_RELEASEDIR, OP_FSYNCDIR, OP_STATFS, OP_SETXATTR, OP_GETXATTR, OP_LISTXATTR,
  OP_REMOVEXATTR, OP_CREATE, OP_LSEEK, OP_EXIT,
};

/* A stat travels as 17 doubles: nodeid, generation, then struct stat fields. */
#define STAT_LEN 17

struct session {
  napi_env env;
  struct fuse_session *se;
  uv_poll_t poll;
  napi_ref dispatch;
  napi_async_context actx;
  napi_ref resource;
  struct fuse_buf buf;
  double entry_timeout, attr_timeout, negative_timeout;
  unsigned max_write, want_set, want_clear;
  int refs;      /* 1 for the mount + 1 for the JS session object + 1 while the poll handle closes */
  int polling;
  int closed;    /* fuse_session_destroy done: replies are dropped */
  /* killpriv_io (below): the request being processed, the INIT to amend. */
  const struct fuse_in_header *cur_req;
  size_t cur_len;
  uint64_t init_unique;
  uint32_t init_flags;
  /* on_readable's spin (see there): when the last batch was answered (CLOCK_MONOTONIC
   * ns, 0 before the first), and the mean wait for the next batch when sleeping. */
  int64_t batch_end;
  int64_t sleep_gap;
  /* replyFdAsync jobs queued or running (see the threading note above). */
  pthread_mutex_t lock;
  pthread_cond_t idle;
  int jobs;
};

/* A request in flight; a free slot has req NULL and links to the next free one. */
struct slot {
  fuse_req_t req;
  struct session *s; /* NULL once the session is unmounted */
  uint32_t gen;
  uint32_t next_free;
};

/* handle = slot + gen * SLOTS_MAX: both below 2^53, exact in a double. */
#define SLOT_BITS 22
#define SLOTS_MAX (1u << SLOT_BITS)
#define GEN_MASK ((1u << 30) - 1)
#define NO_SLOT UINT32_MAX

struct table {
  struct slot *slots;
  uint32_t len, free_head;
};

static void session_unref(struct session *s) {
  if (--s->refs == 0) {
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    free(s);
  }
}

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, NULL, "sifuse_fuse: N-API call failed");  \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

/* ---- requests to JS ---------------------------------------------------- */

static struct table *table_of(napi_env env) {
  void *t = NULL;
  napi_get_instance_data(env, &t);
  return t;
}

/* A slot for `req` (growing the table by doubling), or NO_SLOT when out of memory. */
static uint32_t slot_new(struct table *t, struct session *s, fuse_req_t req) {
  if (t->free_head == NO_SLOT) {
    uint32_t len = t->len ? t->len * 2 : 64;
    if (len > SLOTS_MAX) return NO_SLOT;
    struct slot *grown = realloc(t->slots, len * sizeof *grown);
    if (!grown) return NO_SLOT;
    for (uint32_t i = t->len; i < len; i++) grown[i] = (struct slot){NULL, NULL, 0, i + 1 < len ? i + 1 : NO_SLOT};
    t->slots = grown;
    t->free_head = t->len;
    t->len = len;
  }
  uint32_t i = t->free_head;
  struct slot *sl = &t->slots[i];
  t->free_head = sl->next_free;
  sl->req = req;
  sl->s = s;
  return i;
}

static double slot_handle(const struct table *t, uint32_t i) {
  return (double)i + (double)t->slots[i].gen * SLOTS_MAX;
}

/* The live slot `handle` names, or NULL (answered already, or not a request handle). */
static struct slot *slot_of(struct table *t, double handle) {
  if (!(handle >= 0 && handle < (double)SLOTS_MAX * (GEN_MASK + 1.0)) || handle != (double)(uint64_t)handle) return NULL;
  uint64_t h = (uint64_t)handle;
  uint32_t i = (uint32_t)(h & (SLOTS_MAX - 1)), gen = (uint32_t)(h >> SLOT_BITS);
  if (i >= t->len || !t->slots[i].req || t->slots[i].gen != gen) return NULL;
  return &t->slots[i];
}

static void slot_free(struct table *t, struct slot *sl) {
  sl->req = NULL;
  sl->s = NULL;
  sl->gen = (sl->gen + 1) & GEN_MASK;
  sl->next_free = t->free_head;
  t->free_head = (uint32_t)(sl - t->slots);
}

static void table_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  struct table *t = data;
  free(t->slots);
  free(t);
}

static napi_value num(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static napi_value bytes(napi_env env, const void *p, size_t n) {
  napi_value out;
  void *dst;
  napi_create_buffer_copy(env, n, p, &dst, &out);
  return out;
}

static napi_value str(napi_env env, const char *p) {
  return bytes(env, p, strlen(p));
}

/*
 * Calls dispatch(op, handle|null, uid, gid, pid, ...args). A JS exception
 * here is a bug of the adapter (it catches everything): the request is
 * answered EIO and the exception is raised as uncaught.
 */
static void call_js(struct session *s, fuse_req_t req, int op, size_t argc, napi_value *args) {
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value argv[12];
  napi_value fn, recv, result;
  struct table *t = table_of(env);
  uint32_t slot = NO_SLOT;
  double handle = -1;
  argv[0] = num(env, op);
  if (req) {
    slot = slot_new(t, s, req);
    if (slot == NO_SLOT) {
      fuse_reply_err(req, ENOMEM);
      napi_close_handle_scope(env, scope);
      return;
    }
    handle = slot_handle(t, slot);
    argv[1] = num(env, handle);
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    argv[2] = num(env, ctx->uid);
    argv[3] = num(env, ctx->gid);
    argv[4] = num(env, ctx->pid);
  } else {
    napi_get_null(env, &argv[1]);
    argv[2] = argv[3] = argv[4] = argv[1];
  }
  for (size_t i = 0; i < argc && i < 7; i++) argv[5 + i] = args[i];
  napi_get_reference_value(env, s->dispatch, &fn);
  napi_get_undefined(env, &recv);
  if (napi_call_function(env, recv, fn, 5 + argc, argv, &result) != napi_ok) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    /* Unless JS answered it before throwing (then the slot may name a newer request). */
    struct slot *sl = slot == NO_SLOT ? NULL : slot_of(t, handle);
    if (sl) {
      if (sl->s) fuse_reply_err(sl->req, EIO);
      slot_free(t, sl);
    }
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

#define S(req) ((struct session *)fuse_req_userdata(req))
#define ARGS(...) napi_value a[] = {__VA_ARGS__}; call_js(S(req), req, OPC, sizeof a / sizeof a[0], a)
#define ENV napi_env env = S(req)->env

static double fh_of(struct fuse_file_info *fi) { return fi ? (double)fi->fh : -1; }

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  struct session *s = userdata;
  conn->want |= s->want_set & conn->capable;
  conn->want &= ~s->want_clear;
  /* The receive buffer is fixed and reused: requests are never spliced in.
   * Replies may be spliced out (js_reply_fd_async: bytes of an image file). */
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_MOVE);
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  else conn->want &= ~FUSE_CAP_SPLICE_WRITE;
  if (s->max_write) conn->max_write = s->max_write;
  conn->time_gran = 1;
  napi_env env = s->env;
  napi_value a[] = {num(env, conn->proto_major), num(env, conn->proto_minor), num(env, conn->want),
                    num(env, conn->capable), num(env, conn->max_write), num(env, conn->max_readahead)};
  call_js(s, NULL, OP_INIT, 6, a);
}

#define OPC OP_LOOKUP
static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  ENV; ARGS(num(env, parent), str(env, name));
}
#undef OPC
static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  struct session *s = S(req);
  napi_env env = s->env;
  napi_value a[] = {num(env, ino), num(env, (double)nlookup)};
  fuse_reply_none(req);
  call_js(s, NULL, OP_FORGET, 2, a);
}
static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  struct session *s = S(req);
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value ab, arr;
  void *data;
  napi_create_arraybuffer(env, count * 2 * sizeof(double), &data, &ab);
  napi_create_typedarray(env, napi_float64_array, count * 2, ab, 0, &arr);
  double *d = data;
  for (size_t i = 0; i < count; i++) {
    d[2 * i] = (double)forgets[i].ino;
    d[2 * i + 1] = (double)forgets[i].nlookup;
  }
  fuse_reply_none(req);
  napi_value a[] = {arr};
  call_js(s, NULL, OP_FORGET_MULTI, 1, a);
  napi_close_handle_scope(env, scope);
}
#define OPC OP_GETATTR
static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, fh_of(fi)));
}
#undef OPC
#define OPC OP_SETATTR
static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st, int to_set, struct fuse_file_info *fi) {
  ENV;
  napi_value ab, arr;
  void *data;
  napi_create_arraybuffer(env, 8 * sizeof(double), &data, &ab);
  napi_create_typedarray(env, napi_float64_array, 8, ab, 0, &arr);
  double *d = data;
  d[0] = st->st_mode; d[1] = st->st_uid; d[2] = st->st_gid; d[3] = (double)st->st_size;
  d[4] = (double)st->st_atim.tv_sec; d[5] = st->st_atim.tv_nsec;
  d[6] = (double)st->st_mtim.tv_sec; d[7] = st->st_mtim.tv_nsec;
  ARGS(num(env, ino), num(env, to_set), arr, num(env, fh_of(fi)));
}
#undef OPC
#define OPC OP_READLINK
static void ll_readlink(fuse_req_t req, fuse_ino_t ino) { ENV; ARGS(num(env, ino)); }
#undef OPC
#define OPC OP_MKNOD
static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  ENV; ARGS(num(env, parent), str(env, name), num(env, mode), num(env, (double)rdev));
}
#undef OPC
#define OPC OP_MKDIR
static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  ENV; ARGS(num(env, parent), str(env, name), num(env, mode | S_IFDIR));
}
#undef OPC
#define OPC OP_UNLINK
static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  ENV; ARGS(num(env, parent), str(env, name));
}
#undef OPC
#define OPC OP_RMDIR
static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  ENV; ARGS(num(env, parent), str(env, name));
}
#undef OPC
#define OPC OP_SYMLINK
static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  ENV; ARGS(num(env, parent), str(env, name), str(env, link));
}
#undef OPC
#define OPC OP_RENAME
static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags) {
  ENV; ARGS(num(env, parent), str(env, name), num(env, newparent), str(env, newname), num(env, flags));
}
#undef OPC
#define OPC OP_LINK
static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  ENV; ARGS(num(env, ino), num(env, newparent), str(env, newname));
}
#undef OPC
#define OPC OP_OPEN
static uint32_t open_flags_of(struct session *s);
static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, fi->flags), num(env, open_flags_of(S(req))));
}
#undef OPC
#define OPC OP_READ
static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, (double)size), num(env, (double)off), num(env, fh_of(fi)));
}
#undef OPC
#define OPC OP_WRITE
/*
 * The request's write_flags (FUSE_WRITE_KILL_SUIDGID: the writer lacks
 * CAP_FSETID, so the server clears set-id bits), which libfuse 3.14 does not
 * pass on. Its do_write hands over the data as PARAM(arg), the bytes right
 * after the request's struct fuse_write_in (protocol >= 7.9; splice is off,
 * so the request sits whole in the receive buffer).
 */
struct sifuse_write_in { uint64_t fh, offset; uint32_t size, write_flags; uint64_t lock_owner; uint32_t flags, padding; };
static uint32_t write_flags_of(const char *buf) {
  const struct sifuse_write_in *in = (const struct sifuse_write_in *)(const void *)(buf - sizeof *in);
  return in->write_flags;
}
static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi) {
  /* buf lives in the reused receive buffer: JS gets a copy. */
  ENV; ARGS(num(env, ino), bytes(env, buf, size), num(env, (double)off), num(env, fh_of(fi)),
            num(env, write_flags_of(buf)));
}
#undef OPC
#define OPC OP_FLUSH
static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, fh_of(fi)));
}
#undef OPC
#define OPC OP_RELEASE
static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, fh_of(fi)), num(env, fi->flags));
}
#undef OPC
#define OPC OP_FSYNC
static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, datasync), num(env, fh_of(fi)));
}
#undef OPC
#define OPC OP_OPENDIR
static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, fi->flags));
}
#undef OPC
#define OPC OP_READDIRPLUS
static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, (double)size), num(env, (double)off), num(env, fh_of(fi)));
}
#undef OPC
#define OPC OP_RELEASEDIR
static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, fh_of(fi)));
}
#undef OPC
#define OPC OP_FSYNCDIR
static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, datasync), num(env, fh_of(fi)));
}
#undef OPC
#define OPC OP_STATFS
static void ll_statfs(fuse_req_t req, fuse_ino_t ino) { ENV; ARGS(num(env, ino)); }
#undef OPC
#define OPC OP_SETXATTR
static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
                        int flags) {
  ENV; ARGS(num(env, ino), str(env, name), bytes(env, value, size), num(env, flags));
}
#undef OPC
#define OPC OP_GETXATTR
static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  ENV; ARGS(num(env, ino), str(env, name), num(env, (double)size));
}
#undef OPC
#define OPC OP_LISTXATTR
static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  ENV; ARGS(num(env, ino), num(env, (double)size));
}
#undef OPC
#define OPC OP_REMOVEXATTR
static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  ENV; ARGS(num(env, ino), str(env, name));
}
#undef OPC
#define OPC OP_CREATE
static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi) {
  ENV; ARGS(num(env, parent), str(env, name), num(env, mode), num(env, fi->flags));
}
#undef OPC
#define OPC OP_LSEEK
static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  ENV; ARGS(num(env, ino), num(env, (double)off), num(env, whence), num(env, fh_of(fi)));
}
#undef OPC

/*
 * Not registered, so the kernel handles or refuses them itself: access
 * (default_permissions), getlk/setlk/flock (local locks), fallocate
 * (ENOSYS becomes EOPNOTSUPP), ioctl, poll, bmap, copy_file_range (generic
 * fallback), plain readdir (readdirplus only).
 */
static const struct fuse_lowlevel_ops ops = {
  .init = ll_init, .lookup = ll_lookup, .forget = ll_forget, .forget_multi = ll_forget_multi,
  .getattr = ll_getattr, .setattr = ll_setattr, .readlink = ll_readlink, .mknod = ll_mknod,
  .mkdir = ll_mkdir, .unlink = ll_unlink, .rmdir = ll_rmdir, .symlink = ll_symlink,
  .rename = ll_rename, .link = ll_link, .open = ll_open, .read = ll_read, .write = ll_write,
  .flush = ll_flush, .release = ll_release, .fsync = ll_fsync, .opendir = ll_opendir,
  .readdirplus = ll_readdirplus, .releasedir = ll_releasedir, .fsyncdir = ll_fsyncdir,
  .statfs = ll_statfs, .setxattr = ll_setxattr, .getxattr = ll_getxattr, .listxattr = ll_listxattr,
  .removexattr = ll_removexattr, .create = ll_create, .lseek = ll_lseek,
};

/* ---- FUSE_HANDLE_KILLPRIV_V2 through libfuse 3.14 ------------------------- */
/*
 * libfuse 3.14 knows neither FUSE_HANDLE_KILLPRIV_V2 nor OPEN's open_flags
 * (and never forwards FUSE_HANDLE_KILLPRIV). A custom I/O pair
 * (fuse_session_custom_io) sees every request read and every reply written:
 * it remembers the request being processed (libfuse dispatches it before the
 * next read) and, when JS asks for it (want bit CAP_HANDLE_KILLPRIV_V2), adds
 * FUSE_HANDLE_KILLPRIV_V2 to the INIT reply if the kernel offered it. Then
 * the kernel sets SB_NOSEC (no GETXATTR security.capability before each
 * buffered write), sends no GETATTR before a chown, and leaves the killing
 * of set-id bits to the server (linux/fuse.h 7.33): FUSE_WRITE_KILL_SUIDGID
 * on WRITE, FATTR_KILL_SUIDGID on SETATTR (chown; truncate without
 * CAP_FSETID), FUSE_OPEN_KILL_SUIDGID on OPEN with O_TRUNC.
 */
#define SIFUSE_CAP_KILLPRIV_V2 (1u << 30)

static ssize_t killpriv_read(int fd, void *buf, size_t len, void *userdata) {
  struct session *s = userdata;
  ssize_t n = read(fd, buf, len);
  if (n < (ssize_t)sizeof(struct fuse_in_header)) {
    s->cur_req = NULL;
    return n;
  }
  const struct fuse_in_header *h = buf;
  s->cur_req = h;
  s->cur_len = (size_t)n;
  /* fuse_init_in: major, minor, max_readahead, flags (the first 16 bytes of every version). */
  if (h->opcode == FUSE_INIT && (size_t)n >= sizeof *h + 4 * sizeof(uint32_t)) {
    const uint32_t *in = (const void *)(h + 1);
    s->init_unique = h->unique;
    s->init_flags = in[3];
  }
  return n;
}

/* Spliced replies (js_reply_fd_async) carry data, never the INIT reply: passed on as they are. */
static ssize_t plain_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len, unsigned int flags,
                                 void *userdata) {
  (void)userdata;
  return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t killpriv_writev(int fd, struct iovec *iov, int count, void *userdata) {
  struct session *s = userdata;
  if (s->init_unique != 0 && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header) &&
      iov[1].iov_len >= 4 * sizeof(uint32_t)) {
    const struct fuse_out_header *oh = iov[0].iov_base;
    if (oh->unique == s->init_unique) {
      s->init_unique = 0;
      /* fuse_init_out: major, minor, max_readahead, flags. */
      uint32_t *out = iov[1].iov_base;
      if (oh->error == 0 && (s->want_set & SIFUSE_CAP_KILLPRIV_V2) && (s->init_flags & FUSE_HANDLE_KILLPRIV_V2))
        out[3] |= FUSE_HANDLE_KILLPRIV_V2;
    }
  }
  return writev(fd, iov, count);
}

/* open_flags (FUSE_OPEN_KILL_SUIDGID) of the OPEN being dispatched. */
static uint32_t open_flags_of(struct session *s) {
  const struct fuse_in_header *h = s->cur_req;
  if (!h || h->opcode != FUSE_OPEN || s->cur_len < sizeof *h + sizeof(struct fuse_open_in)) return 0;
  return ((const struct fuse_open_in *)(const void *)(h + 1))->open_flags;
}

/* ---- the loop ------------------------------------------------------------ */

static void stop_polling(struct session *s) {
  if (s->polling) {
    uv_poll_stop(&s->poll);
    s->polling = 0;
  }
}

/*
 * Spinning for the next request. A program issuing requests back to back
 * (tar, cp, a walk) waits for each answer, and the daemon then waits for
 * the next request: when sleeping and waking up is slow (a VM whose idle
 * vCPU is descheduled by the host: the wait, batch answered to next request
 * seen, grows from ~5 us to 30-45 us, and perf puts half of the daemon's CPU
 * in epoll_pwait and in the reply's wake-up of the caller), the loop thread
 * polls /dev/fuse instead, for up to SPIN_NS after a batch. Only while the
 * mean wait when sleeping (sleep_gap, over batches that came within SPIN_NS
 * of the one before) is above SPIN_WORTH_NS, so where waking is cheap
 * nothing changes; only while nothing else of the loop is ready or due (its
 * epoll fd, a due timer or immediate: uv_backend_timeout 0); at most
 * SPIN_BATCHES batches in a row, after which the loop runs and the next wait
 * is a sleeping one again (a fresh sleep_gap sample). An idle or slow-paced
 * mount never spins; a pace just past SPIN_NS costs one SPIN_NS per pause.
 * Between polls the thread yields its CPU (sched_yield): on an idle machine
 * that returns at once, and on a busy one (where waking up is cheap anyway)
 * a yield that comes back after SPIN_YIELDED_NS ends the spin, so the spin
 * never holds a CPU another task wants. Measured under two CPU hogs, untar
 * and rm -rf of it: 1.96-2.32 / 1.08-1.12 s against 2.52-5.26 / 1.52-1.75
 * without the spin; without the yield (a pause loop) the spin made rm -rf
 * 0.91 -> 1.11-1.26 s there.
 */
#define SPIN_NS 50000
#define SPIN_WORTH_NS 20000
#define SPIN_BATCHES 32
#define SPIN_YIELDED_NS 5000

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* 1: a request is waiting on /dev/fuse; 0: back to the loop (nothing came in time, or the loop has work). */
static int next_request_soon(struct session *s) {
  uv_loop_t *loop = s->poll.loop;
  uv_update_time(loop);
  if (uv_backend_timeout(loop) == 0) return 0;
  struct pollfd p[2] = {{fuse_session_fd(s->se), POLLIN, 0}, {uv_backend_fd(loop), POLLIN, 0}};
  do {
    /* The epoll fd is ready whenever /dev/fuse is (it watches it too): ready alone, it is other work. */
    if (poll(p, 2, 0) > 0) return (p[0].revents & POLLIN) != 0;
    /* Between polls, the CPU goes to anything else runnable on it: a yield
     * that comes back late means the CPU is wanted (the machine is busy,
     * where waking up is cheap anyway), so the loop sleeps instead. */
    int64_t before = now_ns();
    sched_yield();
    if (now_ns() - before > SPIN_YIELDED_NS) return 0;
  } while (now_ns() - s->batch_end < SPIN_NS);
  return 0;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  struct session *s = handle->data;
  napi_env env = s->env;
  int gone = status < 0;
  int64_t gap = s->batch_end ? now_ns() - s->batch_end : SPIN_NS;
  if (gap < SPIN_NS) s->sleep_gap += (gap - s->sleep_gap) / 8;
  int spin = gap < SPIN_NS && s->sleep_gap > SPIN_WORTH_NS;
  for (int batches = 1;; batches++) {
    napi_handle_scope hscope;
    napi_callback_scope cscope;
    napi_value resource;
    napi_open_handle_scope(env, &hscope);
    napi_get_reference_value(env, s->resource, &resource);
    /* One callback scope per batch: promise jobs run when it closes. */
    napi_open_callback_scope(env, resource, s->actx, &cscope);
    while (!gone && !s->closed && s->polling) {
      int res = fuse_session_receive_buf(s->se, &s->buf);
      if (res == -EINTR) continue;
      if (res == -EAGAIN) break;
      if (res <= 0) {
        gone = 1;
        break;
      }
      fuse_session_process_buf(s->se, &s->buf);
      if (fuse_session_exited(s->se)) gone = 1;
    }
    if (gone && s->polling) {
      stop_polling(s);
      call_js(s, NULL, OP_EXIT, 0, NULL);
    }
    napi_close_callback_scope(env, cscope);
    napi_close_handle_scope(env, hscope);
    s->batch_end = now_ns();
    if (!spin || gone || s->closed || !s->polling || batches >= SPIN_BATCHES || !next_request_soon(s)) break;
  }
}

/* ---- exported functions ------------------------------------------------------ */

/* libfuse's last message (e.g. fusermount3's reason), for the mount error. */
static char last_log[512];
/* While mounting, messages are kept for the error; afterwards they go to stderr. */
static int log_to_stderr = 1;

static void log_func(enum fuse_log_level level, const char *fmt, va_list ap) {
  (void)level;
  if (log_to_stderr) {
    vfprintf(stderr, fmt, ap);
    return;
  }
  vsnprintf(last_log, sizeof last_log, fmt, ap);
  size_t n = strlen(last_log);
  while (n > 0 && (last_log[n - 1] == '\n' || last_log[n - 1] == ' ')) last_log[--n] = 0;
}

static void throw_mount_error(napi_env env, const char *code, const char *what) {
  char msg[700];
  snprintf(msg, sizeof msg, "%s%s%s", what, last_log[0] ? ": " : "", last_log);
  napi_throw_error(env, code, msg);
}

static struct session *get_session(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "not a FUSE session");
    return NULL;
  }
  return p;
}

/* The live slot of handle `v`, or NULL with an exception pending. */
static struct slot *live_slot(napi_env env, struct table *t, napi_value v) {
  double handle;
  if (napi_get_value_double(env, v, &handle) != napi_ok) {
    napi_throw_type_error(env, NULL, "not a FUSE request");
    return NULL;
  }
  struct slot *sl = slot_of(t, handle);
  if (!sl) napi_throw_error(env, NULL, "FUSE request answered twice");
  return sl;
}

/*
 * The reply half of a request handle, its slot freed; throws if already
 * answered. *sp: the request's session (valid for the rest of this call).
 * NULL with *dropped set when the session is unmounted (nothing to answer).
 */
static fuse_req_t take_req(napi_env env, napi_value v, int *dropped, struct session **sp) {
  struct table *t = table_of(env);
  *dropped = 0;
  struct slot *sl = live_slot(env, t, v);
  if (!sl) return NULL;
  fuse_req_t req = sl->req;
  struct session *s = sl->s;
  slot_free(t, sl);
  if (!s) {
    *dropped = 1;
    return NULL;
  }
  *sp = s;
  return req;
}

static double getnum(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

static double *get_f64(napi_env env, napi_value v, size_t *len) {
  napi_typedarray_type type;
  void *data = NULL;
  size_t n = 0;
  if (napi_get_typedarray_info(env, v, &type, &n, &data, NULL, NULL) != napi_ok || type != napi_float64_array) {
    napi_throw_type_error(env, NULL, "expected a Float64Array");
    return NULL;
  }
  *len = n;
  return data;
}

static void fill_entry(const double *d, struct fuse_entry_param *e, const struct session *s) {
  memset(e, 0, sizeof *e);
  e->ino = (fuse_ino_t)d[0];
  e->generation = (uint64_t)d[1];
  struct stat *st = &e->attr;
  st->st_ino = (ino_t)d[2];
  st->st_mode = (mode_t)d[3];
  st->st_nlink = (nlink_t)d[4];
  st->st_uid = (uid_t)d[5];
  st->st_gid = (gid_t)d[6];
  st->st_size = (off_t)d[7];
  st->st_blocks = (blkcnt_t)d[8];
  st->st_atim.tv_sec = (time_t)d[9];
  st->st_atim.tv_nsec = (long)d[10];
  st->st_mtim.tv_sec = (time_t)d[11];
  st->st_mtim.tv_nsec = (long)d[12];
  st->st_ctim.tv_sec = (time_t)d[13];
  st->st_ctim.tv_nsec = (long)d[14];
  st->st_rdev = (dev_t)d[15];
  st->st_blksize = (blksize_t)d[16];
  e->attr_timeout = s->attr_timeout;
  e->entry_timeout = e->ino ? s->entry_timeout : s->negative_timeout;
}

static void fill_fi(double fh, double flags, struct fuse_file_info *fi) {
  memset(fi, 0, sizeof *fi);
  unsigned f = (unsigned)flags;
  fi->fh = (uint64_t)fh;
  fi->direct_io = !!(f & 1);
  fi->keep_cache = !!(f & 2);
  fi->nonseekable = !!(f & 4);
  fi->noflush = !!(f & 8);
  fi->cache_readdir = !!(f & 16);
}

#define REPLY_PROLOGUE(n)                                  \
  size_t argc = n;                                         \
  napi_value argv[n];                                      \
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL)); \
  int dropped;                                             \
  struct session *rs = NULL;                               \
  fuse_req_t req = take_req(env, argv[0], &dropped, &rs);  \
  if (!req) return NULL

static napi_value reply_result(napi_env env, int res) {
  /* A failed write to /dev/fuse (e.g. the caller was interrupted: ENOENT) is not the adapter's error. */
  return num(env, res);
}

static napi_value js_reply_err(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  return reply_result(env, fuse_reply_err(req, (int)getnum(env, argv[1])));
}

static napi_value js_reply_none(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(1);
  fuse_reply_none(req);
  return NULL;
}

static napi_value js_reply_entry(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  size_t n;
  double *d = get_f64(env, argv[1], &n);
  if (!d || n < STAT_LEN) {
    fuse_reply_err(req, EIO);
    return NULL;
  }
  struct fuse_entry_param e;
  fill_entry(d, &e, rs);
  return reply_result(env, fuse_reply_entry(req, &e));
}

static napi_value js_reply_create(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(4);
  size_t n;
  double *d = get_f64(env, argv[1], &n);
  if (!d || n < STAT_LEN) {
    fuse_reply_err(req, EIO);
    return NULL;
  }
  struct fuse_entry_param e;
  struct fuse_file_info fi;
  fill_entry(d, &e, rs);
  fill_fi(getnum(env, argv[2]), getnum(env, argv[3]), &fi);
  return reply_result(env, fuse_reply_create(req, &e, &fi));
}

static napi_value js_reply_attr(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  size_t n;
  double *d = get_f64(env, argv[1], &n);
  if (!d || n < STAT_LEN) {
    fuse_reply_err(req, EIO);
    return NULL;
  }
  struct fuse_entry_param e;
  struct session *s = rs;
  fill_entry(d, &e, s);
  return reply_result(env, fuse_reply_attr(req, &e.attr, s->attr_timeout));
}

static napi_value js_reply_open(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3);
  struct fuse_file_info fi;
  fill_fi(getnum(env, argv[1]), getnum(env, argv[2]), &fi);
  return reply_result(env, fuse_reply_open(req, &fi));
}

/* Zero-copy: fuse_reply_buf writes straight from the Buffer's memory. */
static napi_value js_reply_buf(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  void *data = NULL;
  size_t len = 0;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
    fuse_reply_err(req, EIO);
    return NULL;
  }
  return reply_result(env, fuse_reply_buf(req, data, len));
}

/*
 * replyFdAsync(handle, fd, position, length) -> Promise<void>: a READ
 * answered with `length` bytes at `position` of host file `fd` (a stored
 * block of the image) by a libuv pool thread: libfuse's fuse_reply_data
 * splices them file -> pipe -> /dev/fuse (FUSE_CAP_SPLICE_WRITE; replies
 * under two pages it copies), so the kernel copies them once, into the
 * reader's pages, and the JS thread neither waits for the disk nor makes
 * that copy. The job reads a duplicate of `fd`, so the caller may close its
 * own at once; the promise settles (on the JS thread) after the reply is
 * written. libfuse answers a read error with its errno. The caller bounds
 * the range inside the image.
 */
struct fd_job {
  napi_async_work work;
  napi_deferred done;
  struct session *s;
  fuse_req_t req;
  int fd;
  off_t pos;
  size_t len;
};

static void fd_job_run(napi_env env, void *data) {
  (void)env;
  struct fd_job *j = data;
  struct fuse_bufvec bv = FUSE_BUFVEC_INIT(j->len);
  bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
  bv.buf[0].fd = j->fd;
  bv.buf[0].pos = j->pos;
  fuse_reply_data(j->req, &bv, 0);
  close(j->fd);
  pthread_mutex_lock(&j->s->lock);
  if (--j->s->jobs == 0) pthread_cond_broadcast(&j->s->idle);
  pthread_mutex_unlock(&j->s->lock);
}

/* Settles replyFdAsync's promise and frees the job (its work and session reference, if it got them). */
static void fd_job_settle(napi_env env, struct fd_job *j) {
  napi_value undef;
  napi_get_undefined(env, &undef);
  napi_resolve_deferred(env, j->done, undef);
  if (j->work) napi_delete_async_work(env, j->work);
  if (j->s) session_unref(j->s);
  free(j);
}

static void fd_job_done(napi_env env, napi_status status, void *data) {
  (void)status;
  fd_job_settle(env, data);
}

static napi_value js_reply_fd_async(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double fd = -1, pos = -1, len = 0;
  if (argc != 4 || napi_get_value_double(env, argv[1], &fd) != napi_ok ||
      napi_get_value_double(env, argv[2], &pos) != napi_ok || napi_get_value_double(env, argv[3], &len) != napi_ok ||
      !(fd >= 0 && fd <= INT32_MAX && fd == (int)fd) || !(pos >= 0 && pos <= 9007199254740991.0 && pos == (double)(int64_t)pos) ||
      !(len >= 1 && len <= (1 << 24) && len == (double)(int64_t)len)) {
    napi_throw_type_error(env, NULL, "replyFdAsync needs (request, fd, position, length of 1 byte to 16 MiB)");
    return NULL;
  }
  /* Answered twice throws here, before anything is made (take_req below cannot fail then). */
  if (!live_slot(env, table_of(env), argv[0])) return NULL;
  napi_value promise, name;
  struct fd_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "replyFdAsync: out of memory");
    return NULL;
  }
  if (napi_create_promise(env, &j->done, &promise) != napi_ok) {
    free(j);
    napi_throw_error(env, NULL, "sifuse_fuse: N-API call failed");
    return NULL;
  }
  int dropped;
  struct session *s = NULL;
  fuse_req_t req = take_req(env, argv[0], &dropped, &s);
  if (!req) { /* the session is unmounted: nothing to answer */
    fd_job_settle(env, j);
    return promise;
  }
  j->req = req;
  j->pos = (off_t)pos;
  j->len = (size_t)len;
  j->fd = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
  if (j->fd < 0 || napi_create_string_utf8(env, "sifuse:replyFdAsync", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, fd_job_run, fd_job_done, j, &j->work) != napi_ok) {
    int err = j->fd < 0 ? errno : EIO;
    if (j->fd >= 0) close(j->fd);
    fuse_reply_err(req, err);
    j->work = NULL;
    fd_job_settle(env, j);
    return promise;
  }
  j->s = s;
  s->refs++;
  pthread_mutex_lock(&s->lock);
  s->jobs++;
  pthread_mutex_unlock(&s->lock);
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    /* Not queued: the reply is written here instead, and the job is done. */
    fd_job_run(env, j);
    fd_job_done(env, napi_ok, j);
  }
  return promise;
}

static napi_value js_reply_readlink(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  void *data = NULL;
  size_t len = 0;
  char *z;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || !(z = malloc(len + 1))) {
    fuse_reply_err(req, EIO);
    return NULL;
  }
  memcpy(z, data, len);
  z[len] = 0;
  int res = fuse_reply_readlink(req, z);
  free(z);
  return reply_result(env, res);
}

static napi_value js_reply_write(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  return reply_result(env, fuse_reply_write(req, (size_t)getnum(env, argv[1])));
}

static napi_value js_reply_xattr(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  return reply_result(env, fuse_reply_xattr(req, (size_t)getnum(env, argv[1])));
}

static napi_value js_reply_lseek(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  return reply_result(env, fuse_reply_lseek(req, (off_t)getnum(env, argv[1])));
}

/* statfs as a Float64Array: bsize frsize blocks bfree bavail files ffree favail namemax. */
static napi_value js_reply_statfs(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  size_t n;
  double *d = get_f64(env, argv[1], &n);
  if (!d || n < 9) {
    fuse_reply_err(req, EIO);
    return NULL;
  }
  struct statvfs v;
  memset(&v, 0, sizeof v);
  v.f_bsize = (unsigned long)d[0];
  v.f_frsize = (unsigned long)d[1];
  v.f_blocks = (fsblkcnt_t)d[2];
  v.f_bfree = (fsblkcnt_t)d[3];
  v.f_bavail = (fsblkcnt_t)d[4];
  v.f_files = (fsfilcnt_t)d[5];
  v.f_ffree = (fsfilcnt_t)d[6];
  v.f_favail = (fsfilcnt_t)d[7];
  v.f_namemax = (unsigned long)d[8];
  return reply_result(env, fuse_reply_statfs(req, &v));
}

/*
 * replyDirplus(req, size, firstOffset, names: Buffer[], stats: Float64Array)
 * packs entries in order while they fit in `size` bytes, entry i getting
 * offset firstOffset + i + 1, and returns how many it packed (the kernel
 * takes a lookup reference on each packed entry other than "." and "..").
 */
static napi_value js_reply_dirplus(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(5);
  struct session *s = rs;
  size_t size = (size_t)getnum(env, argv[1]);
  double first = getnum(env, argv[2]);
  uint32_t count = 0;
  size_t n = 0;
  double *d = get_f64(env, argv[4], &n);
  if (!d || napi_get_array_length(env, argv[3], &count) != napi_ok || (size_t)count * STAT_LEN > n) {
    fuse_reply_err(req, EIO);
    return NULL;
  }
  char *buf = malloc(size ? size : 1);
  if (!buf) {
    fuse_reply_err(req, ENOMEM);
    return NULL;
  }
  size_t used = 0;
  uint32_t packed = 0;
  char name[256];
  for (; packed < count; packed++) {
    napi_value el;
    void *data = NULL;
    size_t len = 0;
    napi_get_element(env, argv[3], packed, &el);
    if (napi_get_buffer_info(env, el, &data, &len) != napi_ok || len == 0 || len > 255) break;
    memcpy(name, data, len);
    name[len] = 0;
    struct fuse_entry_param e;
    fill_entry(d + (size_t)packed * STAT_LEN, &e, s);
    size_t need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)(first + packed + 1));
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf, used);
  free(buf);
  return num(env, packed);
}

static napi_value js_notify_inval_entry(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct session *s = get_session(env, argv[0]);
  void *data = NULL;
  size_t len = 0;
  if (!s) return NULL;
  if (s->closed) return num(env, -ENOTCONN);
  CHECK(napi_get_buffer_info(env, argv[2], &data, &len));
  return num(env, fuse_lowlevel_notify_inval_entry(s->se, (fuse_ino_t)getnum(env, argv[1]), data, len));
}

static napi_value js_notify_inval_inode(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  if (s->closed) return num(env, -ENOTCONN);
  return num(env, fuse_lowlevel_notify_inval_inode(s->se, (fuse_ino_t)getnum(env, argv[1]),
                                                    (off_t)getnum(env, argv[2]), (off_t)getnum(env, argv[3])));
}

static void session_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  struct session *s = data;
  session_unref(s);
}

/*
 * mount(mountpoint, args: string[], opts: Float64Array [entryTimeout,
 * attrTimeout, negativeTimeout, maxWrite, wantSet, wantClear], dispatch)
 * creates the session, mounts it and starts polling. `args` are libfuse
 * command-line arguments (argv[0] first, e.g. "-o", "fsname=...").
 */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char mnt[4096];
  size_t mlen;
  if (napi_get_value_string_utf8(env, argv[0], mnt, sizeof mnt, &mlen) != napi_ok || mlen >= sizeof mnt - 1) {
    napi_throw_error(env, NULL, "mount point path too long");
    return NULL;
  }
  uint32_t nargs = 0;
  CHECK(napi_get_array_length(env, argv[1], &nargs));
  size_t olen;
  double *o = get_f64(env, argv[2], &olen);
  if (!o || olen < 6) return NULL;
  if (nargs > 64) {
    napi_throw_error(env, NULL, "too many FUSE arguments");
    return NULL;
  }
  char *cargv[65];
  for (uint32_t i = 0; i < nargs; i++) {
    napi_value el;
    size_t len;
    napi_get_element(env, argv[1], i, &el);
    CHECK(napi_get_value_string_utf8(env, el, NULL, 0, &len));
    cargv[i] = malloc(len + 1);
    napi_get_value_string_utf8(env, el, cargv[i], len + 1, &len);
  }
  cargv[nargs] = NULL;
  struct fuse_args fargs = FUSE_ARGS_INIT((int)nargs, cargv);

  struct session *s = calloc(1, sizeof *s);
  if (!s) {
    for (uint32_t i = 0; i < nargs; i++) free(cargv[i]);
    napi_throw_error(env, "ENOMEM", "sifuse_fuse: out of memory");
    return NULL;
  }
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->idle, NULL);
  last_log[0] = 0;
  log_to_stderr = 0;
  fuse_set_log_func(log_func);
  s->env = env;
  s->refs = 1;
  s->entry_timeout = o[0];
  s->attr_timeout = o[1];
  s->negative_timeout = o[2];
  s->max_write = (unsigned)o[3];
  s->want_set = (unsigned)o[4];
  s->want_clear = (unsigned)o[5];
  s->se = fuse_session_new(&fargs, &ops, sizeof ops, s);
  fuse_opt_free_args(&fargs);
  for (uint32_t i = 0; i < nargs; i++) free(cargv[i]);
  if (!s->se) {
    log_to_stderr = 1;
    session_unref(s); /* refs is 1: frees it */
    throw_mount_error(env, "EINVAL", "libfuse refused the mount options");
    return NULL;
  }
  if (fuse_session_mount(s->se, mnt) != 0) {
    log_to_stderr = 1;
    fuse_session_destroy(s->se);
    session_unref(s); /* refs is 1: frees it */
    throw_mount_error(env, "EMOUNT", "mounting failed");
    return NULL;
  }
  log_to_stderr = 1;
  int fd = fuse_session_fd(s->se);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  const struct fuse_custom_io io = {.read = killpriv_read, .writev = killpriv_writev, .splice_send = plain_splice_send};
  if (fuse_session_custom_io(s->se, &io, fd) != 0) {
    fuse_session_unmount(s->se);
    fuse_session_destroy(s->se);
    session_unref(s); /* refs is 1: frees it */
    throw_mount_error(env, "EMOUNT", "libfuse refused the session's I/O functions");
    return NULL;
  }
  uv_loop_t *loop;
  napi_value resource, name, ext;
  napi_get_uv_event_loop(env, &loop);
  napi_create_reference(env, argv[3], 1, &s->dispatch);
  napi_create_object(env, &resource);
  napi_create_reference(env, resource, 1, &s->resource);
  napi_create_string_utf8(env, "sifuse:fuse", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, resource, name, &s->actx);
  uv_poll_init(loop, &s->poll, fd);
  s->poll.data = s;
  uv_poll_start(&s->poll, UV_READABLE, on_readable);
  s->polling = 1;
  s->refs++; /* the JS session object */
  napi_create_external(env, s, session_finalize, NULL, &ext);
  return ext;
}

/* Stops reading new requests (in-flight ones can still be answered). */
static napi_value js_pause(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct session *s = get_session(env, argv[0]);
  if (s) stop_polling(s);
  return NULL;
}

static void on_poll_closed(uv_handle_t *h) {
  session_unref(h->data);
}

/* Unmounts (a no-op when the kernel side is already gone) and destroys the session. */
static napi_value js_unmount(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct session *s = get_session(env, argv[0]);
  if (!s || s->closed) return NULL;
  stop_polling(s);
  s->closed = 1;
  /* Requests still in flight: their replies are dropped from now on (take_req). */
  struct table *t = table_of(env);
  for (uint32_t i = 0; i < t->len; i++)
    if (t->slots[i].s == s) t->slots[i].s = NULL;
  /* Pool-thread replies write to the session's fd, which unmounting closes. */
  pthread_mutex_lock(&s->lock);
  while (s->jobs > 0) pthread_cond_wait(&s->idle, &s->lock);
  pthread_mutex_unlock(&s->lock);
  fuse_session_unmount(s->se);
  fuse_session_destroy(s->se);
  free(s->buf.mem);
  s->buf.mem = NULL;
  napi_delete_reference(env, s->dispatch);
  napi_delete_reference(env, s->resource);
  napi_async_destroy(env, s->actx);
  s->refs++; /* held by the closing poll handle */
  uv_close((uv_handle_t *)&s->poll, on_poll_closed);
  return NULL;
}

static napi_value js_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  return num(env, s->closed ? -1 : fuse_session_fd(s->se));
}

static napi_value init(napi_env env, napi_value exports) {
  struct table *t = calloc(1, sizeof *t);
  if (!t || napi_set_instance_data(env, t, table_finalize, NULL) != napi_ok) {
    free(t);
    napi_throw_error(env, NULL, "sifuse_fuse: out of memory");
    return NULL;
  }
  t->free_head = NO_SLOT;
  struct { const char *name; napi_callback fn; } fns[] = {
    {"mount", js_mount}, {"pause", js_pause}, {"unmount", js_unmount}, {"fd", js_fd},
    {"replyErr", js_reply_err}, {"replyNone", js_reply_none}, {"replyEntry", js_reply_entry},
    {"replyCreate", js_reply_create}, {"replyAttr", js_reply_attr}, {"replyOpen", js_reply_open},
    {"replyBuf", js_reply_buf}, {"replyFdAsync", js_reply_fd_async}, {"replyReadlink", js_reply_readlink}, {"replyWrite", js_reply_write},
    {"replyXattr", js_reply_xattr}, {"replyLseek", js_reply_lseek}, {"replyStatfs", js_reply_statfs},
    {"replyDirplus", js_reply_dirplus}, {"notifyInvalEntry", js_notify_inval_entry},
    {"notifyInvalInode", js_notify_inval_inode},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  struct { const char *name; unsigned v; } caps[] = {
    {"CAP_ASYNC_READ", FUSE_CAP_ASYNC_READ}, {"CAP_ATOMIC_O_TRUNC", FUSE_CAP_ATOMIC_O_TRUNC},
    {"CAP_EXPORT_SUPPORT", FUSE_CAP_EXPORT_SUPPORT}, {"CAP_DONT_MASK", FUSE_CAP_DONT_MASK},
    {"CAP_AUTO_INVAL_DATA", FUSE_CAP_AUTO_INVAL_DATA}, {"CAP_READDIRPLUS", FUSE_CAP_READDIRPLUS},
    {"CAP_READDIRPLUS_AUTO", FUSE_CAP_READDIRPLUS_AUTO}, {"CAP_ASYNC_DIO", FUSE_CAP_ASYNC_DIO},
    {"CAP_WRITEBACK_CACHE", FUSE_CAP_WRITEBACK_CACHE}, {"CAP_PARALLEL_DIROPS", FUSE_CAP_PARALLEL_DIROPS},
    {"CAP_POSIX_ACL", FUSE_CAP_POSIX_ACL}, {"CAP_HANDLE_KILLPRIV", FUSE_CAP_HANDLE_KILLPRIV},
    {"CAP_HANDLE_KILLPRIV_V2", SIFUSE_CAP_KILLPRIV_V2},
    {"CAP_CACHE_SYMLINKS", FUSE_CAP_CACHE_SYMLINKS}, {"CAP_NO_OPENDIR_SUPPORT", FUSE_CAP_NO_OPENDIR_SUPPORT},
    {"CAP_NO_OPEN_SUPPORT", FUSE_CAP_NO_OPEN_SUPPORT},
    {"CAP_EXPLICIT_INVAL_DATA", FUSE_CAP_EXPLICIT_INVAL_DATA}, {"CAP_POSIX_LOCKS", FUSE_CAP_POSIX_LOCKS},
    {"CAP_FLOCK_LOCKS", FUSE_CAP_FLOCK_LOCKS}, {"CAP_IOCTL_DIR", FUSE_CAP_IOCTL_DIR},
  };
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
    napi_set_named_property(env, exports, caps[i].name, num(env, caps[i].v));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
