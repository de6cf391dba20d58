/*
 * cloche-gvisor-compat: an LD_PRELOAD shim for sandboxes on the gVisor tier.
 *
 * Why: the runsc that Debian ships (2022-12) rejects AT_NO_AUTOMOUNT in statx(2) and
 * fstatat(2) with EINVAL, and coreutils passes that flag on every call, so `ls` and
 * `stat` fail with "Invalid argument". The flag only matters for automount points,
 * which a sandbox has none of, so dropping it changes nothing else. The shim defines
 * statx, fstatat and fstatat64, clears the flag and makes the system call itself.
 *
 * It is built with -nostdlib and makes raw system calls, so it depends on no libc and
 * loads under glibc and musl alike. Static binaries (busybox) never load it.
 */
#include <stddef.h>

#define AT_NO_AUTOMOUNT 0x800
#define SYS_newfstatat 262
#define SYS_statx 332

static long raw_syscall5(long n, long a, long b, long c, long d, long e) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}

/* The libc convention: -1 and errno. errno is libc's, reached through its accessor. */
extern int *__errno_location(void) __attribute__((weak));

static int finish(long ret) {
    if (ret < 0 && ret > -4096) {
        if (__errno_location)
            *__errno_location() = (int)-ret;
        return -1;
    }
    return (int)ret;
}

struct statx;
struct stat;

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    return finish(raw_syscall5(SYS_statx, dirfd, (long)path, flags & ~AT_NO_AUTOMOUNT, mask, (long)buf));
}

int fstatat(int dirfd, const char *path, struct stat *buf, int flags) {
    return finish(raw_syscall5(SYS_newfstatat, dirfd, (long)path, (long)buf, flags & ~AT_NO_AUTOMOUNT, 0));
}

int fstatat64(int dirfd, const char *path, struct stat *buf, int flags) {
    return fstatat(dirfd, path, buf, flags);
}
