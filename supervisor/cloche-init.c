/*
 * cloche-init: the resident supervisor that runs as pid 1 inside every sandbox.
 *
 * Why it exists: `runc exec` costs ~20 ms per command. cloche-init is started once
 * with the sandbox and accepts exec requests on a listening unix socket that the host
 * created and handed over as fd 3 (runc --preserve-fds 1), so the socket file lives only
 * on the host and is invisible inside the sandbox. Each connection carries one request,
 * served by a handler process: it spawns the command, relays stdin/stdout/stderr as
 * frames and reports the exit status. pid 1 also reaps orphans.
 *
 * Speed (an exec of `true` costs ~0.5 ms of CPU in the sandbox; cloche-init's share
 * was about as much again, now ~0.1 ms): handlers are reused rather than forked per connection. They wait on the
 * listening socket themselves and mark their state in a page shared with pid 1; pid 1
 * forks a new handler only when a connection waits and no handler is idle, and a
 * handler left idle for HANDLER_IDLE_MS exits, so an idle sandbox keeps at most a few.
 * The command is spawned with clone(CLONE_VM | CLONE_VFORK), as posix_spawn does (no
 * copy of the handler's page tables, no copy-on-write faults); its child side makes only
 * syscalls, reports a failure through the memory it shares with the handler instead of
 * a pipe, and leaves that memory as it found it.
 *
 * Under gVisor (runsc has no --preserve-fds) the host cannot hand the socket over, so
 * when CLOCHE_LISTEN names a path, pid 1 binds and listens there itself: the path is in
 * a directory bind-mounted from the host, and runsc --host-uds=create makes the socket
 * reachable from the host (see src/cloche/node/gvisor.py). gVisor also has no
 * pidfd_open (ENOSYS), so a handler then waits for its command with a SIGCHLD self-pipe.
 *
 * It is a static C binary so that it runs in any template, busybox or distroless alike;
 * so it also serves helpers by name: `cloche-init userns`, `once` and `stop`.
 *
 * Wire format (both directions): 1 byte type, 4 byte big-endian length, payload.
 *   host -> sandbox: 'E' exec request, 'I' stdin bytes, 'C' close stdin,
 *                    'S' signal (u32), 'W' window size (u16 rows, u16 cols),
 *                    'K' kill process group (u32 pid, u32 signal; ESRCH once the pid itself is gone), 'P' ping.
 *   sandbox -> host: 'S' started (u32 pid), 'O' stdout, 'E' stderr,
 *                    'X' exit (i32 exit code, i32 signal, u8 truncated, u8 timed out),
 *                    'K' kill result (i32 errno), 'P' pong.
 * Exec payload: u32 flags, u32 timeout_ms, u64 output_cap, u16 rows, u16 cols,
 *   u32 uid, u32 gid, u32 argc, argc strings, u32 envc, envc strings, cwd string;
 *   a string is u32 length + bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define FLAG_PTY 1u
#define FLAG_DETACH 2u
#define FLAG_STDIN 4u
#define MAX_FRAME (8u << 20)
#define CHUNK 65536
#define MAX_ARGS 65536 /* strings in an argv or env list */
#define MAX_HANDLERS 1024     /* pooled handlers; past that, one-shot handlers as before */
#define HANDLER_IDLE_MS 10000 /* a pooled handler idle this long exits */

enum { SLOT_FREE, SLOT_IDLE, SLOT_BUSY };

/* Shared between pid 1 and the handlers (MAP_SHARED): pid 1 assigns slots, each handler
 * writes only its own state. Nothing in it is trusted for memory safety. */
struct pool {
    int high; /* slots [0, high) have been used */
    int state[MAX_HANDLERS];
};

extern char **environ;

static int conn = -1;  /* -1 once the host has gone away */
static int have_pidfd = 1;  /* 0 under gVisor: handlers wait on a SIGCHLD self-pipe */
static int chld_pipe[2] = {-1, -1};
static int wake_pipe[2] = {-1, -1}; /* SIGCHLD in pid 1, and a handler going busy */
static struct pool *pool;
static int null_fd = -1; /* /dev/null, opened once, the stdin of commands without any */

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void send_frame(char type, const void *data, uint32_t len) {
    if (conn < 0) return;
    unsigned char hdr[5] = {(unsigned char)type, len >> 24, len >> 16, len >> 8, len};
    struct iovec iov[2] = {{hdr, 5}, {(void *)data, len}};
    size_t total = 5 + len;
    while (total > 0) {
        ssize_t n = writev(conn, iov, 2);
        if (n < 0) {
            if (errno == EINTR) continue;
            close(conn);
            conn = -1;
            return;
        }
        total -= (size_t)n;
        for (int i = 0; i < 2 && n > 0; i++) {
            size_t take = (size_t)n < iov[i].iov_len ? (size_t)n : iov[i].iov_len;
            iov[i].iov_base = (char *)iov[i].iov_base + take;
            iov[i].iov_len -= take;
            n -= (ssize_t)take;
        }
    }
}

/* Reads one frame; returns its type, or 0 on EOF or error. *out is malloc'd. */
static char recv_frame(int fd, unsigned char **out, uint32_t *len) {
    unsigned char hdr[5];
    if (read_all(fd, hdr, 5) < 0) return 0;
    *len = ((uint32_t)hdr[1] << 24) | ((uint32_t)hdr[2] << 16) | ((uint32_t)hdr[3] << 8) | hdr[4];
    if (*len > MAX_FRAME) return 0;
    *out = malloc(*len + 1);
    if (!*out) return 0;
    if (read_all(fd, *out, *len) < 0) {
        free(*out);
        return 0;
    }
    (*out)[*len] = 0;
    return (char)hdr[0];
}

struct cursor {
    unsigned char *p;
    uint32_t left;
    int bad;
};

static uint64_t take_uint(struct cursor *c, int bytes) {
    uint64_t v = 0;
    if (c->left < (uint32_t)bytes) {
        c->bad = 1;
        return 0;
    }
    for (int i = 0; i < bytes; i++) v = (v << 8) | c->p[i];
    c->p += bytes;
    c->left -= (uint32_t)bytes;
    return v;
}

/* Returns a NUL-terminated copy of the next string. */
static char *take_str(struct cursor *c) {
    uint32_t n = (uint32_t)take_uint(c, 4);
    if (c->bad || c->left < n) {
        c->bad = 1;
        return NULL;
    }
    char *s = malloc(n + 1);
    if (!s) {
        c->bad = 1;
        return NULL;
    }
    memcpy(s, c->p, n);
    s[n] = 0;
    c->p += n;
    c->left -= n;
    return s;
}

static char **take_list(struct cursor *c) {
    uint32_t n = (uint32_t)take_uint(c, 4);
    if (c->bad || n > MAX_ARGS) {
        c->bad = 1;
        return NULL;
    }
    char **v = calloc(n + 1, sizeof(char *));
    for (uint32_t i = 0; v && i < n && !c->bad; i++) v[i] = take_str(c);
    return v;
}

static void put_u32(unsigned char *b, uint32_t v) {
    b[0] = v >> 24;
    b[1] = v >> 16;
    b[2] = v >> 8;
    b[3] = v;
}

static void send_exit(int code, int sig, int truncated, int timed_out) {
    unsigned char b[10];
    put_u32(b, (uint32_t)code);
    put_u32(b + 4, (uint32_t)sig);
    b[8] = (unsigned char)truncated;
    b[9] = (unsigned char)timed_out;
    send_frame('X', b, sizeof b);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct outstream {
    int fd;
    char type;
};

static uint64_t out_sent, out_cap;
static int out_truncated;

/* Reads what is available on s and forwards it, within the output cap. Returns 0 on EOF. */
static int pump(struct outstream *s, int nonblock_drain) {
    char buf[CHUNK];
    for (;;) {
        ssize_t n = read(s->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN) return 1;
            close(s->fd);
            s->fd = -1;
            return 0;
        }
        uint64_t room = out_cap > out_sent ? out_cap - out_sent : 0;
        uint64_t give = (uint64_t)n < room ? (uint64_t)n : room;
        if (give < (uint64_t)n) out_truncated = 1;
        if (give > 0) send_frame(s->type, buf, (uint32_t)give);
        out_sent += give;
        if (!nonblock_drain) return 1;
    }
}

static void set_winsize(int fd, unsigned rows, unsigned cols) {
    if (rows == 0 || cols == 0) return;
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    ioctl(fd, TIOCSWINSZ, &ws);
}

/* pid 1 sets every disposition to SIG_DFL when it starts; of the ones cloche-init sets
 * after that, handled signals revert at exec by themselves, ignored ones would not. */
static void reset_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
}

/* One command to spawn, and what a failed spawn reports back (errno, and the stage:
 * 0 chdir, 1 setuid, 2 exec; -1 while nothing failed). */
struct spawn_args {
    int flags, pty_slave, in_fd, out_fd, err_fd;
    uint32_t uid, gid;
    char **argv;
    const char *cwd;
    volatile int err, stage;
};

/* The child side of the spawn: it shares the handler's memory until it execs, so it only
 * makes syscalls (the id changes go straight to the kernel: glibc's wrappers would
 * broadcast them to threads), writes nothing but a->err and a->stage, and never returns. */
static int child_exec(void *arg) {
    struct spawn_args *a = arg;
    int in_fd = a->in_fd, out_fd = a->out_fd, err_fd = a->err_fd;
    reset_signals();
    setsid();
    if (a->flags & FLAG_PTY) {
        ioctl(a->pty_slave, TIOCSCTTY, 0);
        in_fd = out_fd = err_fd = a->pty_slave;
    }
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    int stage = 0;
    if (a->cwd[0] && chdir(a->cwd) < 0) goto fail;
    stage = 1;
    if (a->gid != 0 && syscall(SYS_setgid, a->gid) < 0) goto fail;
    if (a->uid != 0 && (syscall(SYS_setgroups, 0, NULL), syscall(SYS_setuid, a->uid) < 0)) goto fail;
    stage = 2;
    execvp(a->argv[0], a->argv); /* the caller pointed environ at the request's env */
fail:
    a->err = errno;
    a->stage = stage;
    _exit(127);
}

static void on_sigchld(int sig) {
    (void)sig;
    int saved = errno;
    const char c = 0;
    if (write(chld_pipe[1], &c, 1) < 0) {
        /* the pipe is full: a wake-up is already pending */
    }
    errno = saved;
}

/* Without pidfds: SIGCHLD writes to a pipe the handler polls. Installed once, before any
 * spawn, so an exit cannot slip by between the spawn and the poll. */
static void watch_children(void) {
    if (pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) _exit(1);
    struct sigaction sa = {0};
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
}

/* Called when the pidfd (or the SIGCHLD pipe) is readable: 1 once `pid` is reaped. */
static int child_exited(pid_t pid, int *status) {
    if (have_pidfd) return waitpid(pid, status, 0) == pid;
    char buf[64];
    while (read(chld_pipe[0], buf, sizeof buf) > 0) {
    }
    return waitpid(pid, status, WNOHANG) == pid;
}

static void handle_kill(unsigned char *payload, uint32_t len) {
    struct cursor c = {payload, len, 0};
    pid_t pid = (pid_t)take_uint(&c, 4);
    int sig = (int)take_uint(&c, 4);
    int err = 0;
    if (c.bad || pid <= 1) {
        err = EINVAL;
    } else if (kill(pid, 0) < 0) {
        /* The command itself is gone (its handler reaped it): members of its group that
         * linger a moment (a child killed with it, not yet reaped by pid 1) are not it. */
        err = errno;
    } else if (kill(-pid, sig) < 0 && kill(pid, sig) < 0) {
        err = errno;
    }
    unsigned char b[4];
    put_u32(b, (uint32_t)err);
    send_frame('K', b, 4);
}

static void free_list(char **v) {
    for (char **p = v; p && *p; p++) free(*p);
    free(v);
}

static void run_exec(uint32_t flags, uint32_t timeout_ms, unsigned rows, unsigned cols, uint32_t uid,
                     uint32_t gid, char **argv, char **envp, const char *cwd);

/* Parses an exec request and runs it; the handler serves many, so it frees what it took. */
static void handle_exec(unsigned char *payload, uint32_t len) {
    struct cursor c = {payload, len, 0};
    uint32_t flags = (uint32_t)take_uint(&c, 4);
    uint32_t timeout_ms = (uint32_t)take_uint(&c, 4);
    out_cap = take_uint(&c, 8);
    out_sent = 0;
    out_truncated = 0;
    unsigned rows = (unsigned)take_uint(&c, 2), cols = (unsigned)take_uint(&c, 2);
    uint32_t uid = (uint32_t)take_uint(&c, 4), gid = (uint32_t)take_uint(&c, 4);
    char **argv = take_list(&c);
    char **envp = take_list(&c);
    char *cwd = take_str(&c);
    if (c.bad || !argv || !argv[0] || !envp || !cwd) {
        const char msg[] = "cloche-init: malformed exec request\n";
        send_frame('E', msg, sizeof msg - 1);
        send_exit(126, 0, 0, 0);
    } else {
        run_exec(flags, timeout_ms, rows, cols, uid, gid, argv, envp, cwd);
    }
    free_list(argv);
    free_list(envp);
    free(cwd);
}

/* Spawns like vfork, as glibc's posix_spawn does: the child runs on a stack of its own in
 * the handler's memory, and the handler sleeps until the child has exec'd or exited. */
static pid_t spawn(struct spawn_args *a, char **envp) {
    /* A handler spawns one at a time. Room for glibc's execvp, whose script fallback copies
     * argv onto the stack; pages never touched cost nothing. */
    static char stack[(MAX_ARGS + 2) * sizeof(char *) + (64 << 10)] __attribute__((aligned(16)));
    char **own_environ = environ;
    environ = envp; /* execvp searches the request's PATH */
    pid_t pid = clone(child_exec, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, a);
    environ = own_environ;
    return pid;
}

static void close_parent_ends(int a, int b, int c, int d) {
    int fds[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0) close(fds[i]);
}

static void run_exec(uint32_t flags, uint32_t timeout_ms, unsigned rows, unsigned cols, uint32_t uid,
                     uint32_t gid, char **argv, char **envp, const char *cwd) {
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    int master = -1, slave = -1;
    if (flags & FLAG_PTY) {
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
            const char msg[] = "cloche-init: cannot allocate a pty\n";
            if (master >= 0) close(master);
            send_frame('E', msg, sizeof msg - 1);
            send_exit(126, 0, 0, 0);
            return;
        }
        slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
        set_winsize(master, rows, cols);
    } else {
        if (flags & FLAG_STDIN) pipe2(in, O_CLOEXEC);
        pipe2(out, O_CLOEXEC);
        pipe2(err, O_CLOEXEC);
    }

    struct spawn_args sp = {(int)flags, slave, in[0] >= 0 ? in[0] : null_fd, out[1], err[1], uid, gid,
                            argv, cwd, 0, -1};
    pid_t pid = spawn(&sp, envp);
    if (slave >= 0) close(slave);
    if (in[0] >= 0) close(in[0]);
    if (out[1] >= 0) close(out[1]);
    if (err[1] >= 0) close(err[1]);
    if (pid < 0) {
        const char msg[] = "cloche-init: fork failed (pids limit reached?)\n";
        close_parent_ends(in[1], out[0], err[0], master);
        send_frame('E', msg, sizeof msg - 1);
        send_exit(126, 0, 0, 0);
        return;
    }
    if (sp.stage >= 0) {
        char msg[512];
        const char *what = sp.stage == 0 ? "chdir" : sp.stage == 1 ? "setuid" : "exec";
        int n = snprintf(msg, sizeof msg, "cloche: %s %.300s: %s\n", what,
                         sp.stage == 0 ? cwd : argv[0], strerror(sp.err));
        if (n < 0) n = 0;
        if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1; /* never send past the buffer */
        waitpid(pid, NULL, 0);
        close_parent_ends(in[1], out[0], err[0], master);
        send_frame('E', msg, (uint32_t)n);
        send_exit(sp.err == ENOENT ? 127 : 126, 0, 0, 0);
        return;
    }
    unsigned char started[4];
    put_u32(started, (uint32_t)pid);
    send_frame('S', started, 4);

    int pidfd = have_pidfd ? (int)syscall(SYS_pidfd_open, pid, 0) : chld_pipe[0];
    struct outstream streams[2] = {{master >= 0 ? master : out[0], 'O'}, {err[0], 'E'}};
    int stdin_fd = master >= 0 ? master : in[1];
    if (!(flags & FLAG_STDIN) && master < 0) stdin_fd = -1;
    int64_t deadline = timeout_ms ? now_ms() + timeout_ms : 0;
    int timed_out = 0, status = 0;

    for (;;) {
        struct pollfd pfd[4];
        int n = 0, i_conn = -1, i_out = -1, i_err = -1, i_pid = -1;
        if (conn >= 0) pfd[i_conn = n++] = (struct pollfd){conn, POLLIN, 0};
        if (streams[0].fd >= 0) pfd[i_out = n++] = (struct pollfd){streams[0].fd, POLLIN, 0};
        if (streams[1].fd >= 0) pfd[i_err = n++] = (struct pollfd){streams[1].fd, POLLIN, 0};
        pfd[i_pid = n++] = (struct pollfd){pidfd, POLLIN, 0};
        int wait = -1;
        if (deadline && !timed_out) {
            int64_t left = deadline - now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        int r = poll(pfd, (nfds_t)n, wait);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0 && deadline && !timed_out) {
            timed_out = 1;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            continue;
        }
        if (i_out >= 0 && pfd[i_out].revents) pump(&streams[0], 0);
        if (i_err >= 0 && pfd[i_err].revents) pump(&streams[1], 0);
        if (i_conn >= 0 && pfd[i_conn].revents) {
            unsigned char *data = NULL;
            uint32_t len2 = 0;
            char t = recv_frame(conn, &data, &len2);
            if (t == 0) {
                close(conn);
                conn = -1;
                if (!(flags & FLAG_DETACH)) {
                    kill(-pid, SIGKILL);
                    kill(pid, SIGKILL);
                }
            } else if (t == 'I' && stdin_fd >= 0) {
                write_all(stdin_fd, data, len2);
            } else if (t == 'C' && stdin_fd >= 0 && master < 0) {
                close(stdin_fd);
                stdin_fd = -1;
            } else if (t == 'C' && master >= 0) {
                const char eot = 4;
                write_all(master, &eot, 1);
            } else if (t == 'S' && len2 >= 4) {
                int sig = (int)(((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) |
                                ((uint32_t)data[2] << 8) | data[3]);
                if (kill(-pid, sig) < 0) kill(pid, sig);
            } else if (t == 'W' && len2 >= 4 && master >= 0) {
                set_winsize(master, ((unsigned)data[0] << 8) | data[1],
                            ((unsigned)data[2] << 8) | data[3]);
            }
            free(data);
        }
        if (pfd[i_pid].revents && child_exited(pid, &status)) break;
    }
    /* The command has exited: forward what is already buffered, but do not wait for
     * daemons that inherited the pipes. */
    for (int i = 0; i < 2; i++) {
        if (streams[i].fd >= 0) {
            fcntl(streams[i].fd, F_SETFL, O_NONBLOCK);
            pump(&streams[i], 1);
        }
    }
    if (stdin_fd >= 0 && stdin_fd != master) close(stdin_fd);
    close_parent_ends(streams[0].fd, streams[1].fd, have_pidfd ? pidfd : -1, -1);
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + sig;
    send_exit(code, sig, out_truncated, timed_out);
}

static void serve(int fd) {
    conn = fd;
    unsigned char *payload = NULL;
    uint32_t len = 0;
    char t = recv_frame(conn, &payload, &len);
    if (t == 'E') {
        handle_exec(payload, len);
    } else if (t == 'K') {
        handle_kill(payload, len);
    } else if (t == 'P') {
        send_frame('P', NULL, 0);
    }
    free(payload);
}

static void wake(char c) {
    if (write(wake_pipe[1], &c, 1) < 0) {
        /* the pipe is full: a wake-up is already pending */
    }
}

static void on_sigchld_pid1(int sig) {
    (void)sig;
    int saved = errno;
    wake('c');
    errno = saved;
}

static int any_idle(int high) {
    for (int i = 0; i < high && i < MAX_HANDLERS; i++)
        if (__atomic_load_n(&pool->state[i], __ATOMIC_SEQ_CST) == SLOT_IDLE) return 1;
    return 0;
}

static void set_state(int slot, int state) {
    __atomic_store_n(&pool->state[slot], state, __ATOMIC_SEQ_CST);
}

/* What a process forked from pid 1 to serve connections changes first. */
static void become_handler(void) {
    signal(SIGCHLD, SIG_DFL);
    close(wake_pipe[0]);
    if (!have_pidfd) watch_children();
}

/* Waits up to HANDLER_IDLE_MS for a connection; 0 on timeout. With EPOLLEXCLUSIVE a
 * connection wakes one idle handler, not all of them (plain poll where it is refused). */
static int wait_for_connection(int ep) {
    struct epoll_event ev;
    if (ep >= 0) return epoll_wait(ep, &ev, 1, HANDLER_IDLE_MS);
    struct pollfd p = {3, POLLIN, 0};
    return poll(&p, 1, HANDLER_IDLE_MS);
}

/* A pooled handler: serves connections from the listening socket until it has been idle
 * for HANDLER_IDLE_MS. It tells pid 1 when it takes the last idle slot. */
static void __attribute__((noreturn)) handler_loop(int slot) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE};
    if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, 3, &ev) < 0) {
        close(ep);
        ep = -1;
    }
    for (;;) {
        if (wait_for_connection(ep) == 0) {
            set_state(slot, SLOT_BUSY); /* never idle again; pid 1 frees the slot on reaping */
            _exit(0);
        }
        int fd = accept4(3, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue; /* another handler took it (EAGAIN), or EINTR, ECONNABORTED */
        set_state(slot, SLOT_BUSY);
        if (!any_idle(__atomic_load_n(&pool->high, __ATOMIC_SEQ_CST))) wake('g');
        serve(fd);
        if (conn >= 0) close(conn);
        conn = -1;
        set_state(slot, SLOT_IDLE);
    }
}

static pid_t handler_pid[MAX_HANDLERS]; /* pid 1's own record of its pooled handlers */
static int high;

/* A connection waits and no handler is idle: fork one into a free slot. With every slot
 * taken, or when fork fails (pids limit), pid 1 accepts the connection itself and hands
 * it to a one-shot handler, or drops it so the host sees an error at once. */
static void spawn_handler(void) {
    int slot = -1;
    for (int i = 0; i < MAX_HANDLERS && slot < 0; i++)
        if (handler_pid[i] == 0) slot = i;
    if (slot >= 0) {
        set_state(slot, SLOT_IDLE);
        if (slot >= high) __atomic_store_n(&pool->high, high = slot + 1, __ATOMIC_SEQ_CST);
        pid_t pid = fork();
        if (pid == 0) {
            become_handler();
            handler_loop(slot);
        }
        if (pid > 0) {
            handler_pid[slot] = pid;
            return;
        }
        set_state(slot, SLOT_FREE);
    }
    int fd = accept4(3, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    if (slot < 0 && fork() == 0) {
        become_handler();
        serve(fd);
        _exit(0);
    }
    close(fd);
}

/* Reaps orphans and handlers; a dead handler's slot becomes free (idle or not). */
static void reap_children(void) {
    pid_t pid;
    while ((pid = waitpid(-1, NULL, WNOHANG)) > 0) {
        for (int i = 0; i < high; i++) {
            if (handler_pid[i] == pid) {
                handler_pid[i] = 0;
                set_state(i, SLOT_FREE);
                break;
            }
        }
    }
}

/* `cloche-init userns`: enter a new user namespace and wait until stdin closes. The host
 * writes this process's uid_map and takes its namespace as the id-mapping for an
 * idmapped mount of the template, which makes template files owned by the sandbox's
 * own root without copying them. */
static int hold_userns(void) {
    char c;
    if (unshare(CLONE_NEWUSER) < 0) return 1;
    if (write(1, "r", 1) != 1) return 1;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}

/* Bind and listen on `path` as fd 3 (the gVisor tier; see the top of this file). The
 * directory is the sandbox's own, so a stale socket of an earlier run is replaced. */
static int listen_on(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(path, 0600) < 0 ||
        listen(fd, 128) < 0 || dup2(fd, 3) < 0)
        return -1;
    if (fd != 3) close(fd);
    return 0;
}

/* `cloche-init once LOCK CMD ARG...`: exec CMD only while no other `once` on the file
 * LOCK is alive, so that two callers racing to start the same server (two replicas
 * answering a sleeping agent's first requests) start it once. The lock is an flock on
 * LOCK kept across the exec: the server and the children it leaves the descriptor to hold
 * it until they are all gone, and nothing stale survives them. When it is held, the
 * caller is told so on stderr (ONCE_HELD) and the exit status is 75 (EX_TEMPFAIL). LOCK
 * holds the holder's pid (the command's, which the exec keeps), for `cloche-init stop`. */
#define ONCE_HELD "cloche-init once: held by a running process\n"
static int run_once(int argc, char **argv) {
    if (argc < 4) {
        fputs("usage: cloche-init once LOCK CMD [ARG...]\n", stderr);
        return 64;
    }
    int fd = open(argv[2], O_RDWR | O_CREAT | O_NOFOLLOW, 0600);
    if (fd < 0) {
        perror("cloche-init once: open");
        return 71;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK) {
            perror("cloche-init once: flock");
            return 71;
        }
        fputs(ONCE_HELD, stderr);
        return 75;
    }
    if (ftruncate(fd, 0) == 0) dprintf(fd, "%d\n", (int)getpid());
    execvp(argv[3], argv + 3);
    perror("cloche-init once: exec");
    return 127;
}

/* `cloche-init stop LOCK`: SIGKILL the command that holds LOCK through `once` (its
 * process group, then itself), whoever started it; nothing when no one holds it. */
static int run_stop(int argc, char **argv) {
    if (argc != 3) {
        fputs("usage: cloche-init stop LOCK\n", stderr);
        return 64;
    }
    int fd = open(argv[2], O_RDONLY | O_NOFOLLOW);
    if (fd < 0) return errno == ENOENT ? 0 : 71;
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) return 0; /* free: no command runs under it */
    char buf[32] = {0};
    int pid = pread(fd, buf, sizeof buf - 1, 0) > 0 ? atoi(buf) : 0;
    if (pid <= 1) return 71;
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "userns") == 0) return hold_userns();
    if (argc > 1 && strcmp(argv[1], "once") == 0) return run_once(argc, argv);
    if (argc > 1 && strcmp(argv[1], "stop") == 0) return run_stop(argc, argv);
    const char *listen_path = getenv("CLOCHE_LISTEN");
    if (listen_path && listen_on(listen_path) < 0) return 1;
    int probe = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (probe < 0) have_pidfd = 0;
    else close(probe);
    for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL); /* see reset_signals */
    pool = mmap(NULL, sizeof *pool, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (pool == MAP_FAILED || pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0) return 1;
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    /* Commands never inherit the listening socket; handlers poll it, then accept. */
    if (fcntl(3, F_SETFD, FD_CLOEXEC) < 0 || fcntl(3, F_SETFL, O_NONBLOCK) < 0) return 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_sigchld_pid1;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        reap_children();
        int need = !any_idle(high);
        struct pollfd p[2] = {{wake_pipe[0], POLLIN, 0}, {3, POLLIN, 0}};
        if (poll(p, need ? 2 : 1, -1) < 0) continue;
        char buf[64];
        while (read(wake_pipe[0], buf, sizeof buf) > 0) {
        }
        if (need && (p[1].revents & (POLLERR | POLLNVAL))) return 1;
        if (need && p[1].revents) spawn_handler();
    }
}
