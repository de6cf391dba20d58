/*
 * cloche-state: the sandbox's client for its durable state (static, no libc beyond
 * what glibc links in; works in templates without Python or a shell's help).
 *
 * Talks to the unix socket the server binds at /.cloche/host/state.sock, scoped to
 * this sandbox's own namespace. Wire format (see cloche/state/sandbox.py): a frame is
 * a u32 big-endian length and a payload; the payload is fields, each a u32 big-endian
 * length and its bytes. Request: [op, namespace, args...]; reply: ["ok", ...] |
 * ["notfound", msg] | ["conflict", msg, current] | ["error", code, msg].
 *
 * Exit status: 0 done; 1 not found or a condition failed; 2 usage, connection or
 * server error. Messages go to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/.cloche/host/state.sock"
#define MAX_INPUT (16u << 20)
#define MAX_REPLY (64u << 20)
#define MAX_FIELDS 4100

struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void die(int code, const char *fmt, const char *arg) {
    fprintf(stderr, "cloche-state: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(code);
}

static void reserve(struct buf *b, size_t more) {
    if (b->len + more <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) die(2, "%s", "out of memory");
    b->p = p;
    b->cap = cap;
}

static void put_u32(struct buf *b, uint32_t v) {
    reserve(b, 4);
    b->p[b->len++] = v >> 24;
    b->p[b->len++] = v >> 16;
    b->p[b->len++] = v >> 8;
    b->p[b->len++] = v;
}

static void field(struct buf *b, const void *data, size_t n) {
    put_u32(b, (uint32_t)n);
    reserve(b, n);
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void sfield(struct buf *b, const char *s) { field(b, s, s ? strlen(s) : 0); }

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void read_stdin(struct buf *b) {
    for (;;) {
        reserve(b, 65536);
        ssize_t n = read(0, b->p + b->len, 65536);
        if (n < 0) {
            if (errno == EINTR) continue;
            die(2, "reading stdin: %s", strerror(errno));
        }
        if (n == 0) break;
        b->len += n;
        if (b->len > MAX_INPUT) die(2, "%s", "stdin is too large");
    }
}

static void write_all(int fd, const void *p, size_t n) {
    const unsigned char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die(2, "write: %s", strerror(errno));
        }
        c += w;
        n -= w;
    }
}

static void read_all(int fd, void *p, size_t n) {
    unsigned char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            die(2, "reading the reply: %s", strerror(errno));
        }
        if (r == 0) die(2, "%s", "the state service closed the connection");
        c += r;
        n -= r;
    }
}

struct reply {
    unsigned char *data;
    int n;
    const unsigned char *f[MAX_FIELDS];
    uint32_t len[MAX_FIELDS];
};

static int sock_fd = -1;
static const char *sock_path;
static const char *ns = ""; /* "" = this sandbox's own namespace */

static void connect_socket(void) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(sock_path) >= sizeof addr.sun_path) die(2, "socket path too long: %s", sock_path);
    strcpy(addr.sun_path, sock_path);
    sock_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock_fd < 0) die(2, "socket: %s", strerror(errno));
    if (connect(sock_fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die(2, "cannot reach the state service at %s (is this a cloche sandbox?)", sock_path);
}

/* Send one request, read one reply; exits on errors, conflicts and not-found. */
static void call(struct buf *req, struct reply *rep) {
    if (sock_fd < 0) connect_socket();
    unsigned char head[4];
    uint32_t n = (uint32_t)req->len;
    head[0] = n >> 24, head[1] = n >> 16, head[2] = n >> 8, head[3] = n;
    write_all(sock_fd, head, 4);
    write_all(sock_fd, req->p, req->len);
    read_all(sock_fd, head, 4);
    n = get_u32(head);
    if (n > MAX_REPLY) die(2, "%s", "reply too large");
    free(rep->data);
    rep->data = malloc(n ? n : 1);
    if (!rep->data) die(2, "%s", "out of memory");
    read_all(sock_fd, rep->data, n);
    rep->n = 0;
    for (uint32_t i = 0; i < n;) {
        if (i + 4 > n || rep->n >= (int)(sizeof rep->f / sizeof rep->f[0])) die(2, "%s", "malformed reply");
        uint32_t l = get_u32(rep->data + i);
        i += 4;
        if (l > n - i) die(2, "%s", "malformed reply");
        rep->f[rep->n] = rep->data + i;
        rep->len[rep->n++] = l;
        i += l;
    }
    if (rep->n < 1) die(2, "%s", "empty reply");
    char status[16] = {0};
    memcpy(status, rep->f[0], rep->len[0] < 15 ? rep->len[0] : 15);
    if (!strcmp(status, "ok")) return;
    const char *msg = rep->n > 1 ? (const char *)rep->f[1] : "";
    int msglen = rep->n > 1 ? (int)rep->len[1] : 0;
    if (!strcmp(status, "notfound")) {
        fprintf(stderr, "cloche-state: %.*s\n", msglen, msg);
        exit(1);
    }
    if (!strcmp(status, "conflict")) {
        fprintf(stderr, "cloche-state: condition failed: %.*s\n", msglen, msg);
        exit(1);
    }
    if (rep->n > 2)
        fprintf(stderr, "cloche-state: %.*s: %.*s\n", msglen, msg, (int)rep->len[2], (const char *)rep->f[2]);
    else
        fprintf(stderr, "cloche-state: server error\n");
    exit(2);
}

static char *fstr(struct reply *r, int i) {
    if (i >= r->n) die(2, "%s", "short reply");
    char *s = strndup((const char *)r->f[i], r->len[i]);
    if (!s) die(2, "%s", "out of memory");
    return s;
}

static void usage(void) {
    fprintf(stderr,
            "usage: cloche-state [-s SOCKET] [-n NAMESPACE] COMMAND [ARGS]\n"
            "  (-n: a named namespace the tenant granted this sandbox; default: its own)\n"
            "  get KEY                      print the value (-v: its version on stderr)\n"
            "  put [-m VER|-x] [-t TTL] KEY [VALUE]\n"
            "                               store VALUE (or stdin); print the new version;\n"
            "                               -m: only if at version VER; -x: only if absent\n"
            "  del [-m VER] KEY             delete the key\n"
            "  ls [PREFIX]                  list keys: KEY<TAB>VERSION<TAB>SIZE\n"
            "  append [-k IDEM_KEY] [DATA]  append DATA (or stdin) to the log; print its seq\n"
            "  read [-w WAIT_S] [-l LIMIT] [AFTER]\n"
            "                               print entries after AFTER: SEQ<TAB>DATA lines\n"
            "  trim UPTO                    drop entries up to UPTO\n"
            "exit status: 0 done, 1 not found or condition failed, 2 error\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *if_match = "", *ttl = "", *idem = "", *wait_s = "", *limit = "";
    int if_none_match = 0, verbose = 0, opt;
    sock_path = getenv("CLOCHE_STATE_SOCKET");
    if (!sock_path || !*sock_path) sock_path = DEFAULT_SOCKET;
    while ((opt = getopt(argc, argv, "+s:n:h")) != -1) {
        if (opt == 's') sock_path = optarg;
        else if (opt == 'n') ns = optarg;
        else usage();
    }
    if (optind >= argc) usage();
    const char *cmd = argv[optind];
    argc -= optind;
    argv += optind;
    optind = 1;
    while ((opt = getopt(argc, argv, "m:xt:k:w:l:v")) != -1) {
        switch (opt) {
        case 'm': if_match = optarg; break;
        case 'x': if_none_match = 1; break;
        case 't': ttl = optarg; break;
        case 'k': idem = optarg; break;
        case 'w': wait_s = optarg; break;
        case 'l': limit = optarg; break;
        case 'v': verbose = 1; break;
        default: usage();
        }
    }
    char **args = argv + optind;
    int nargs = argc - optind;
    struct buf req = {0};
    struct reply rep = {0};

    if (!strcmp(cmd, "get")) {
        if (nargs != 1) usage();
        sfield(&req, "get"), sfield(&req, ns), sfield(&req, args[0]);
        call(&req, &rep);
        if (rep.n < 3) die(2, "%s", "short reply");
        write_all(1, rep.f[2], rep.len[2]);
        if (verbose) fprintf(stderr, "version %s\n", fstr(&rep, 1));
    } else if (!strcmp(cmd, "put")) {
        if (nargs != 1 && nargs != 2) usage();
        sfield(&req, "put"), sfield(&req, ns), sfield(&req, args[0]);
        if (nargs == 2) {
            sfield(&req, args[1]);
        } else {
            struct buf in = {0};
            read_stdin(&in);
            field(&req, in.p, in.len);
        }
        sfield(&req, if_match), sfield(&req, if_none_match ? "1" : "0"), sfield(&req, ttl);
        call(&req, &rep);
        printf("%s\n", fstr(&rep, 1));
    } else if (!strcmp(cmd, "del")) {
        if (nargs != 1) usage();
        sfield(&req, "del"), sfield(&req, ns), sfield(&req, args[0]), sfield(&req, if_match);
        call(&req, &rep);
        if (rep.n > 1 && rep.len[1] == 1 && rep.f[1][0] == '0') {
            fprintf(stderr, "cloche-state: key '%s' not found\n", args[0]);
            return 1;
        }
    } else if (!strcmp(cmd, "ls")) {
        if (nargs > 1) usage();
        char *cursor = strdup("");
        for (;;) {
            req.len = 0;
            sfield(&req, "ls"), sfield(&req, ns), sfield(&req, nargs ? args[0] : ""), sfield(&req, cursor);
            sfield(&req, "1000");
            call(&req, &rep);
            for (int i = 2; i + 2 < rep.n; i += 3)
                printf("%.*s\t%.*s\t%.*s\n", (int)rep.len[i], (const char *)rep.f[i], (int)rep.len[i + 1],
                       (const char *)rep.f[i + 1], (int)rep.len[i + 2], (const char *)rep.f[i + 2]);
            free(cursor);
            cursor = fstr(&rep, 1);
            if (!*cursor) break;
        }
    } else if (!strcmp(cmd, "append")) {
        if (nargs > 1) usage();
        sfield(&req, "append"), sfield(&req, ns);
        if (nargs == 1) {
            sfield(&req, args[0]);
        } else {
            struct buf in = {0};
            read_stdin(&in);
            field(&req, in.p, in.len);
        }
        sfield(&req, idem);
        call(&req, &rep);
        printf("%s\n", fstr(&rep, 1));
    } else if (!strcmp(cmd, "read")) {
        if (nargs > 1) usage();
        sfield(&req, "read"), sfield(&req, ns), sfield(&req, nargs ? args[0] : "0"), sfield(&req, limit);
        sfield(&req, wait_s);
        call(&req, &rep);
        for (int i = 2; i + 1 < rep.n; i += 2) {
            printf("%.*s\t", (int)rep.len[i], (const char *)rep.f[i]);
            fflush(stdout);
            write_all(1, rep.f[i + 1], rep.len[i + 1]);
            printf("\n");
        }
        if (verbose) fprintf(stderr, "last_seq %s\n", fstr(&rep, 1));
    } else if (!strcmp(cmd, "trim")) {
        if (nargs != 1) usage();
        sfield(&req, "trim"), sfield(&req, ns), sfield(&req, args[0]);
        call(&req, &rep);
        printf("%s\n", fstr(&rep, 1));
    } else {
        usage();
    }
    fflush(stdout);
    return 0;
}
