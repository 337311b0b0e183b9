/*
 * hv_sim_preload.c - run the reference Hyper-V daemons against hvguest's simulator.
 *
 * An LD_PRELOAD shim. It stands in for the file operations of
 * drivers/hv/hv_utils_transport.c (the /dev/vmbus/hv_* character devices) by
 * speaking the socket protocol documented in hvguest/testing/wire.py, and it
 * keeps the daemon away from the machine's own /var/lib/hyperv by redirecting
 * that tree to a scratch directory.
 *
 * Environment:
 *   HVSIM_KVP, HVSIM_VSS, HVSIM_FCOPY  socket of the simulated hv_kvp / hv_vss /
 *                                      hv_fcopy device. Opening a device whose
 *                                      variable is unset fails with ENOENT: the
 *                                      real node is never opened.
 *   HVSIM_STATE_DIR                    replaces /var/lib/hyperv in every path. When
 *                                      unset, paths under /var/lib/hyperv fail with
 *                                      EACCES, so the real directory is never touched.
 *   HVSIM_MOUNTS, HVSIM_MOUNTINFO      files opened instead of the mount table
 *                                      (/proc/mounts, /proc/self/mounts, /etc/mtab,
 *                                      /proc/thread-self/mounts) and of mountinfo
 *                                      (/proc/self/mountinfo, ...), through setmntent,
 *                                      fopen and the open family. When unset and
 *                                      HVSIM_VSS is set, those opens fail with EACCES:
 *                                      the VSS daemon must never see the real table.
 *   HVSIM_FREEZE_ALLOW                 ':'-separated mount points on which
 *                                      ioctl(FIFREEZE) and ioctl(FITHAW) may run; the
 *                                      fd's path (/proc/self/fd) must equal an entry and
 *                                      its st_dev the entry's. Everything else fails
 *                                      with EPERM *before* the real ioctl, and FIFREEZE
 *                                      on the root filesystem (st_dev of "/") always
 *                                      does: frozen, it hangs the machine.
 *   HVSIM_LOG                          when set, a file to which the shim appends one
 *                                      line per mount-table redirection ("mounts
 *                                      <asked> -> <opened>") and per freeze/thaw verdict
 *                                      ("allow|refuse FIFREEZE|FITHAW <path>"), so that
 *                                      a test can prove the redirection took effect.
 *                                      Refusals also go to stderr.
 *
 * Wire protocol (one SOCK_SEQPACKET connection per open(), a tag byte first):
 *   server -> client: O<int32 errno>, M<message>, R<int32 result>, H
 *   client -> server: A (the message was read), W<bytes> (a write)
 *
 * Device semantics kept from the kernel: read blocks for the next message
 * (O_NONBLOCK is ignored, as in hvt_op_read); a buffer shorter than the
 * message fails with EINVAL and the message stays queued; poll reports POLLIN
 * for a queued message, POLLERR|POLLHUP once the device is destroyed, never
 * POLLOUT; after a hangup reads and writes fail with EBADF; pread/pwrite
 * ignore the offset.
 *
 * Children started with popen()/system() inherit LD_PRELOAD on purpose: they
 * own no device fds, so the shim only redirects their state-dir paths, which
 * keeps helper scripts away from the real /var/lib/hyperv as well. Device
 * sockets are always close-on-exec so that a child never holds the device
 * open after the daemon closes it.
 *
 * Not intercepted, because the reference daemons do not use them on the
 * device: select/epoll, dup/dup2, fcntl, mmap. ioctl is intercepted only to
 * guard FIFREEZE/FITHAW (hv_vss_daemon's vss_operate()). The daemons are
 * single-threaded; the fd table is not locked.
 */
#define _GNU_SOURCE
/* Fortify would turn open() and friends into inline wrappers that clash with ours. */
#undef _FORTIFY_SOURCE

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <mntent.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Mirrors MAX_PAYLOAD / MAX_DATAGRAM in hvguest/testing/wire.py. */
#define WIRE_MAX_PAYLOAD 65536
#define WIRE_MAX_DATAGRAM (1 + WIRE_MAX_PAYLOAD)
/* O and R datagrams: tag + int32 little-endian. */
#define WIRE_INT_DATAGRAM 5
/* Device fds above this are refused (EMFILE); the daemons use a handful. */
#define MAX_TRACKED_FDS 4096
/* poll() sets up to this size keep their saved events on the stack. */
#define SMALL_POLL_SET 64

static const char REAL_STATE_DIR[] = "/var/lib/hyperv";

/* Every name under which a daemon can read the mount table (kind 1) or mountinfo (2). */
struct mount_table_name {
	const char *path;
	int kind;
};

static const struct mount_table_name MOUNT_TABLES[] = {
	{"/proc/mounts", 1},
	{"/proc/self/mounts", 1},
	{"/proc/thread-self/mounts", 1},
	{"/etc/mtab", 1},
	{"/proc/self/mountinfo", 2},
	{"/proc/thread-self/mountinfo", 2},
};

struct device_name {
	const char *node;
	const char *env;
};

static const struct device_name DEVICES[] = {
	{"/dev/vmbus/hv_kvp", "HVSIM_KVP"},
	{"/dev/vmbus/hv_vss", "HVSIM_VSS"},
	{"/dev/vmbus/hv_fcopy", "HVSIM_FCOPY"},
};

/* One open() of a simulated device. */
struct sim_fd {
	unsigned char *stash; /* the queued M datagram, tag included */
	size_t stash_len;     /* 0: nothing queued */
	int hung_up;          /* H seen, or the simulator went away */
};

static struct sim_fd *tracked[MAX_TRACKED_FDS];

/* --- the real libc functions, resolved on first use --------------------- */

static void die(const char *what)
{
	/* Our own write() is interposed, so go straight to the system call. */
	static const char prefix[] = "hv_sim_preload: cannot resolve ";
	long ignored = syscall(SYS_write, STDERR_FILENO, prefix, sizeof(prefix) - 1);

	ignored = syscall(SYS_write, STDERR_FILENO, what, strlen(what));
	ignored = syscall(SYS_write, STDERR_FILENO, "\n", 1);
	(void)ignored;
	abort();
}

static void *resolve(void **slot, const char *name)
{
	if (!*slot) {
		*slot = dlsym(RTLD_NEXT, name);
		if (!*slot)
			die(name);
	}
	return *slot;
}

#define REAL(type, name) ((type)resolve(&real_##name, #name))

static void *real_openat, *real_fopen, *real_fopen64, *real_mkdir, *real_access;
static void *real_stat, *real_lstat, *real_stat64, *real_lstat64, *real_unlink;
static void *real_rename, *real_opendir, *real_read, *real_write, *real_pread;
static void *real_pwrite, *real_close, *real_poll, *real_ppoll;
static void *real_setmntent, *real_ioctl;

typedef int (*openat_fn)(int, const char *, int, ...);
typedef FILE *(*fopen_fn)(const char *, const char *);
typedef int (*mkdir_fn)(const char *, mode_t);
typedef int (*access_fn)(const char *, int);
typedef int (*stat_fn)(const char *, struct stat *);
typedef int (*stat64_fn)(const char *, struct stat64 *);
typedef int (*unlink_fn)(const char *);
typedef int (*rename_fn)(const char *, const char *);
typedef DIR *(*opendir_fn)(const char *);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*close_fn)(int);
typedef int (*poll_fn)(struct pollfd *, nfds_t, int);
typedef int (*ppoll_fn)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
typedef FILE *(*setmntent_fn)(const char *, const char *);
typedef int (*ioctl_fn)(int, unsigned long, ...);

/* --- /var/lib/hyperv -> $HVSIM_STATE_DIR ------------------------------------ */

/*
 * The path to use instead of `path`: `path` itself when it is not under
 * /var/lib/hyperv, else the redirected path in `buffer`. NULL (errno set)
 * when there is no state directory to redirect to or the result is too long.
 */
static const char *redirect(const char *path, char *buffer, size_t size)
{
	size_t prefix = sizeof(REAL_STATE_DIR) - 1;
	const char *state_dir;
	int length;

	if (!path || strncmp(path, REAL_STATE_DIR, prefix) != 0 ||
	    (path[prefix] != '\0' && path[prefix] != '/'))
		return path;
	state_dir = getenv("HVSIM_STATE_DIR");
	if (!state_dir || !*state_dir) {
		errno = EACCES;
		return NULL;
	}
	length = snprintf(buffer, size, "%s%s", state_dir, path + prefix);
	if (length < 0 || (size_t)length >= size) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	return buffer;
}

/* --- VSS safety: the mount table and FIFREEZE ------------------------------- */

/* Append `line` to $HVSIM_LOG (if set); with `also_stderr`, to stderr as well. */
static void shim_log(const char *line, int also_stderr)
{
	const char *log_path = getenv("HVSIM_LOG");
	size_t length = strlen(line);
	long ignored = 0;
	int fd;

	if (also_stderr) {
		ignored = syscall(SYS_write, STDERR_FILENO, "hv_sim_preload: ", 16);
		ignored = syscall(SYS_write, STDERR_FILENO, line, length);
	}
	(void)ignored;
	if (!log_path || !*log_path)
		return;
	fd = REAL(openat_fn, openat)(AT_FDCWD, log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
				     0600);
	if (fd < 0)
		return;
	ignored = REAL(write_fn, write)(fd, line, length);
	REAL(close_fn, close)(fd);
}

static int mount_table_kind(const char *path)
{
	size_t i;

	if (!path)
		return 0;
	for (i = 0; i < sizeof(MOUNT_TABLES) / sizeof(MOUNT_TABLES[0]); i++)
		if (strcmp(path, MOUNT_TABLES[i].path) == 0)
			return MOUNT_TABLES[i].kind;
	return 0;
}

/*
 * `path` itself when it is not a mount table (or no VSS device is simulated
 * and no replacement is set), else the replacement file. NULL (errno EACCES)
 * when a VSS daemon asks for a table that has no replacement.
 */
static const char *redirect_mount_table(const char *path)
{
	char line[2 * PATH_MAX + 32];
	int kind = mount_table_kind(path);
	const char *replacement;

	if (!kind)
		return path;
	replacement = getenv(kind == 1 ? "HVSIM_MOUNTS" : "HVSIM_MOUNTINFO");
	if (replacement && *replacement) {
		snprintf(line, sizeof(line), "mounts %s -> %s\n", path, replacement);
		shim_log(line, 0);
		return replacement;
	}
	if (!getenv("HVSIM_VSS"))
		return path;
	snprintf(line, sizeof(line), "refuse mounts %s: no replacement table set\n", path);
	shim_log(line, 1);
	errno = EACCES;
	return NULL;
}

/* Both redirections: the mount table first, then /var/lib/hyperv. */
static const char *redirect_path(const char *path, char *buffer, size_t size)
{
	path = redirect_mount_table(path);
	return path ? redirect(path, buffer, size) : NULL;
}

/* Is `path` (the fd's own path) an entry of $HVSIM_FREEZE_ALLOW on the same device? */
static int on_allow_list(const char *path, dev_t device)
{
	const char *allow = getenv("HVSIM_FREEZE_ALLOW");
	char entry[PATH_MAX];
	struct stat info;
	const char *end;
	size_t length;

	while (allow && *allow) {
		end = strchr(allow, ':');
		length = end ? (size_t)(end - allow) : strlen(allow);
		if (length > 0 && length < sizeof(entry)) {
			memcpy(entry, allow, length);
			entry[length] = '\0';
			if (strcmp(entry, path) == 0 && REAL(stat_fn, stat)(entry, &info) == 0 &&
			    info.st_dev == device)
				return 1;
		}
		allow = end ? end + 1 : NULL;
	}
	return 0;
}

/* 0 if FIFREEZE/FITHAW may run on `fd`; else -1 with errno EPERM (and a log line). */
static int guard_freeze(int fd, unsigned long request)
{
	const char *name = request == FIFREEZE ? "FIFREEZE" : "FITHAW";
	char link[64], path[PATH_MAX], line[PATH_MAX + 96];
	struct stat target, root;
	const char *reason = NULL;
	ssize_t length;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	length = readlink(link, path, sizeof(path) - 1);
	path[length < 0 ? 0 : length] = '\0';
	if (fstat(fd, &target) != 0 || REAL(stat_fn, stat)("/", &root) != 0)
		reason = "cannot stat";
	else if (request == FIFREEZE && target.st_dev == root.st_dev)
		reason = "the root filesystem is never frozen";
	else if (length <= 0 || !on_allow_list(path, target.st_dev))
		reason = "not on HVSIM_FREEZE_ALLOW";
	if (reason) {
		snprintf(line, sizeof(line), "refuse %s %s: %s\n", name, path, reason);
		shim_log(line, 1);
		errno = EPERM;
		return -1;
	}
	if (getenv("HVSIM_LOG")) {
		snprintf(line, sizeof(line), "allow %s %s\n", name, path);
		shim_log(line, 0);
	}
	return 0;
}

/* --- the simulated devices ------------------------------------------------- */

static struct sim_fd *device_of(int fd)
{
	return fd >= 0 && fd < MAX_TRACKED_FDS ? tracked[fd] : NULL;
}

static void forget(int fd)
{
	struct sim_fd *sim = device_of(fd);

	if (sim) {
		free(sim->stash);
		free(sim);
		tracked[fd] = NULL;
	}
}

static int32_t int32_after_tag(const unsigned char *datagram)
{
	uint32_t value = (uint32_t)datagram[1] | (uint32_t)datagram[2] << 8 |
			 (uint32_t)datagram[3] << 16 | (uint32_t)datagram[4] << 24;

	return (int32_t)value;
}

/* The simulator socket for `node`, or 0 when `node` is not a simulated device. */
static const char *device_socket(const char *node, int *is_device)
{
	size_t i;

	*is_device = 0;
	if (!node)
		return NULL;
	for (i = 0; i < sizeof(DEVICES) / sizeof(DEVICES[0]); i++) {
		if (strcmp(node, DEVICES[i].node) == 0) {
			*is_device = 1;
			return getenv(DEVICES[i].env);
		}
	}
	return NULL;
}

/* open() of a simulated device: connect, then take the O datagram's verdict. */
static int open_device(const char *socket_path)
{
	struct sockaddr_un address = {.sun_family = AF_UNIX};
	unsigned char answer[WIRE_INT_DATAGRAM];
	struct sim_fd *sim;
	ssize_t got;
	int32_t verdict;
	int fd;

	if (!socket_path || strlen(socket_path) >= sizeof(address.sun_path)) {
		errno = ENOENT;
		return -1;
	}
	strcpy(address.sun_path, socket_path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
		/* No listener: the node does not exist (not offered, or rescinded). */
		REAL(close_fn, close)(fd);
		errno = ENOENT;
		return -1;
	}
	do
		got = recv(fd, answer, sizeof(answer), 0);
	while (got < 0 && errno == EINTR);
	if (got != WIRE_INT_DATAGRAM || answer[0] != 'O') {
		REAL(close_fn, close)(fd);
		errno = got < 0 ? errno : EIO;
		return -1;
	}
	verdict = int32_after_tag(answer);
	if (verdict != 0) {
		REAL(close_fn, close)(fd);
		errno = verdict;
		return -1;
	}
	if (fd >= MAX_TRACKED_FDS) {
		REAL(close_fn, close)(fd);
		errno = EMFILE;
		return -1;
	}
	sim = calloc(1, sizeof(*sim));
	if (sim)
		sim->stash = malloc(WIRE_MAX_DATAGRAM);
	if (!sim || !sim->stash) {
		free(sim);
		REAL(close_fn, close)(fd);
		errno = ENOMEM;
		return -1;
	}
	forget(fd); /* a stale entry from a close() we did not see */
	tracked[fd] = sim;
	return fd;
}

/*
 * Take one datagram from the simulator (flags: 0 or MSG_DONTWAIT). M goes to
 * the stash (dropped if one is already queued: the kernel queue is one deep,
 * so this does not happen); H or EOF marks the hangup. Returns the tag, 0 on
 * EOF, -1 with errno on error; an R's result goes to *result.
 */
static int receive(int fd, struct sim_fd *sim, int flags, int32_t *result)
{
	unsigned char small[WIRE_INT_DATAGRAM];
	unsigned char *into = sim->stash_len ? small : sim->stash;
	size_t room = sim->stash_len ? sizeof(small) : WIRE_MAX_DATAGRAM;
	ssize_t got = recv(fd, into, room, flags);

	if (got < 0)
		return -1;
	if (got == 0) {
		sim->hung_up = 1;
		return 0;
	}
	switch (into[0]) {
	case 'M':
		if (into == sim->stash)
			sim->stash_len = (size_t)got;
		break;
	case 'H':
		sim->hung_up = 1;
		break;
	case 'R':
		if (got >= WIRE_INT_DATAGRAM && result)
			*result = int32_after_tag(into);
		break;
	default:
		break;
	}
	return into[0];
}

static ssize_t device_read(int fd, struct sim_fd *sim, void *buffer, size_t count)
{
	size_t length;

	while (!sim->stash_len && !sim->hung_up) {
		/* Blocking and interruptible, like hvt_op_read(); EINTR goes to the caller. */
		if (receive(fd, sim, 0, NULL) < 0)
			return -1;
	}
	if (sim->hung_up) {
		errno = EBADF;
		return -1;
	}
	length = sim->stash_len - 1;
	if (count < length) {
		errno = EINVAL; /* and the message stays queued */
		return -1;
	}
	memcpy(buffer, sim->stash + 1, length);
	sim->stash_len = 0;
	/* The kernel frees its slot and runs the on-read callback now. */
	(void)send(fd, "A", 1, MSG_NOSIGNAL);
	return (ssize_t)length;
}

static ssize_t device_write(int fd, struct sim_fd *sim, const void *buffer, size_t count)
{
	size_t sent = count < WIRE_MAX_PAYLOAD ? count : WIRE_MAX_PAYLOAD;
	struct iovec parts[2] = {
		{.iov_base = "W", .iov_len = 1},
		{.iov_base = (void *)buffer, .iov_len = sent},
	};
	struct msghdr message = {.msg_iov = parts, .msg_iovlen = 2};
	int32_t result = 0;
	int tag;

	if (sim->hung_up) {
		errno = EBADF;
		return -1;
	}
	while (sendmsg(fd, &message, MSG_NOSIGNAL) < 0) {
		if (errno == EINTR)
			continue;
		sim->hung_up = 1;
		errno = EBADF;
		return -1;
	}
	/*
	 * The kernel's write is synchronous, so wait for R whatever happens
	 * meanwhile: returning early (say on EINTR) would leave a stray R behind.
	 */
	for (;;) {
		tag = receive(fd, sim, 0, &result);
		if (tag < 0 && errno == EINTR)
			continue;
		if (tag <= 0) {
			sim->hung_up = 1;
			errno = EBADF;
			return -1;
		}
		if (tag == 'R')
			break;
	}
	if (result < 0) {
		errno = -result;
		return -1;
	}
	/* The kernel copies in and accepts the whole buffer, even beyond what we relay. */
	return (ssize_t)count;
}

/* What poll() reports for a device fd, given the events asked for. */
static short device_revents(const struct sim_fd *sim, short events)
{
	if (sim->hung_up)
		return POLLERR | POLLHUP;
	if (sim->stash_len)
		return (short)(events & (POLLIN | POLLRDNORM));
	return 0;
}

/*
 * poll()/ppoll() with device fds: the socket's POLLIN (or hangup) means a
 * datagram arrived; it is pulled into the stash at once, so that M and H are
 * told apart and poll reports exactly what the kernel would.
 */
static int device_poll(struct pollfd *fds, nfds_t count, int timeout_ms,
		       const struct timespec *timeout, const sigset_t *mask, int is_ppoll)
{
	short small[SMALL_POLL_SET];
	short *asked = count <= SMALL_POLL_SET ? small : malloc(count * sizeof(short));
	int forever = is_ppoll ? timeout == NULL : timeout_ms < 0;
	struct timespec zero = {0, 0};
	struct sim_fd *sim;
	int ready_now, result, saved_errno;
	nfds_t i;

	if (!asked) {
		errno = ENOMEM;
		return -1;
	}
	for (;;) {
		ready_now = 0;
		for (i = 0; i < count; i++) {
			asked[i] = fds[i].events;
			sim = device_of(fds[i].fd);
			if (sim) {
				ready_now |= sim->stash_len || sim->hung_up;
				fds[i].events = POLLIN; /* the device never reports POLLOUT */
			}
		}
		if (is_ppoll)
			result = REAL(ppoll_fn, ppoll)(fds, count, ready_now ? &zero : timeout, mask);
		else
			result = REAL(poll_fn, poll)(fds, count, ready_now ? 0 : timeout_ms);
		saved_errno = errno;
		for (i = 0; i < count; i++)
			fds[i].events = asked[i];
		if (result < 0)
			break;
		result = 0;
		for (i = 0; i < count; i++) {
			sim = device_of(fds[i].fd);
			if (sim) {
				if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
					while (!sim->stash_len && !sim->hung_up &&
					       receive(fds[i].fd, sim, MSG_DONTWAIT, NULL) > 0)
						;
				fds[i].revents = device_revents(sim, asked[i]);
			}
			if (fds[i].revents)
				result++;
		}
		/* Only a stray datagram can leave nothing to report; then wait on. */
		if (result > 0 || ready_now || !forever)
			break;
	}
	if (asked != small)
		free(asked);
	errno = saved_errno;
	return result;
}

static int has_device(const struct pollfd *fds, nfds_t count)
{
	nfds_t i;

	for (i = 0; i < count; i++)
		if (device_of(fds[i].fd))
			return 1;
	return 0;
}

/* --- the interposed functions ----------------------------------------------- */

static int shim_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	char buffer[PATH_MAX];
	const char *socket_path;
	int is_device;

	socket_path = device_socket(path, &is_device);
	if (is_device)
		return open_device(socket_path);
	path = redirect_path(path, buffer, sizeof(buffer));
	if (!path)
		return -1;
	return REAL(openat_fn, openat)(dirfd, path, flags, mode);
}

static mode_t mode_argument(int flags, va_list arguments)
{
	return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(arguments, int) : 0;
}

int open(const char *path, int flags, ...)
{
	va_list arguments;
	mode_t mode;

	va_start(arguments, flags);
	mode = mode_argument(flags, arguments);
	va_end(arguments);
	return shim_openat(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	va_list arguments;
	mode_t mode;

	va_start(arguments, flags);
	mode = mode_argument(flags, arguments);
	va_end(arguments);
	return shim_openat(AT_FDCWD, path, flags | O_LARGEFILE, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	va_list arguments;
	mode_t mode;

	va_start(arguments, flags);
	mode = mode_argument(flags, arguments);
	va_end(arguments);
	return shim_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list arguments;
	mode_t mode;

	va_start(arguments, flags);
	mode = mode_argument(flags, arguments);
	va_end(arguments);
	return shim_openat(dirfd, path, flags | O_LARGEFILE, mode);
}

/* The _FORTIFY_SOURCE entry points: the same calls without a mode. */
int __open_2(const char *path, int flags)
{
	return shim_openat(AT_FDCWD, path, flags, 0);
}

int __open64_2(const char *path, int flags)
{
	return shim_openat(AT_FDCWD, path, flags | O_LARGEFILE, 0);
}

int __openat_2(int dirfd, const char *path, int flags)
{
	return shim_openat(dirfd, path, flags, 0);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	return shim_openat(dirfd, path, flags | O_LARGEFILE, 0);
}

/* glibc's fopen opens through an internal call that LD_PRELOAD cannot see. */
FILE *fopen(const char *path, const char *how)
{
	char buffer[PATH_MAX];

	path = redirect_path(path, buffer, sizeof(buffer));
	return path ? REAL(fopen_fn, fopen)(path, how) : NULL;
}

FILE *fopen64(const char *path, const char *how)
{
	char buffer[PATH_MAX];

	path = redirect_path(path, buffer, sizeof(buffer));
	return path ? REAL(fopen_fn, fopen64)(path, how) : NULL;
}

/* hv_vss_daemon reads the table with setmntent("/proc/mounts"); its fopen is internal. */
FILE *setmntent(const char *path, const char *how)
{
	char buffer[PATH_MAX];

	path = redirect_path(path, buffer, sizeof(buffer));
	return path ? REAL(setmntent_fn, setmntent)(path, how) : NULL;
}

FILE *__setmntent(const char *path, const char *how)
{
	return setmntent(path, how);
}

/* FIFREEZE/FITHAW only on allow-listed test filesystems, never FIFREEZE on "/". */
int ioctl(int fd, unsigned long request, ...)
{
	va_list arguments;
	void *argument;

	va_start(arguments, request);
	argument = va_arg(arguments, void *);
	va_end(arguments);
	if ((request == FIFREEZE || request == FITHAW) && guard_freeze(fd, request) != 0)
		return -1;
	return REAL(ioctl_fn, ioctl)(fd, request, argument);
}

int mkdir(const char *path, mode_t mode)
{
	char buffer[PATH_MAX];

	path = redirect(path, buffer, sizeof(buffer));
	return path ? REAL(mkdir_fn, mkdir)(path, mode) : -1;
}

int access(const char *path, int how)
{
	char buffer[PATH_MAX];

	path = redirect(path, buffer, sizeof(buffer));
	return path ? REAL(access_fn, access)(path, how) : -1;
}

int stat(const char *path, struct stat *info)
{
	char buffer[PATH_MAX];

	path = redirect(path, buffer, sizeof(buffer));
	return path ? REAL(stat_fn, stat)(path, info) : -1;
}

int lstat(const char *path, struct stat *info)
{
	char buffer[PATH_MAX];

	path = redirect(path, buffer, sizeof(buffer));
	return path ? REAL(stat_fn, lstat)(path, info) : -1;
}

int stat64(const char *path, struct stat64 *info)
{
	char buffer[PATH_MAX];

	path = redirect(path, buffer, sizeof(buffer));
	return path ? REAL(stat64_fn, stat64)(path, info) : -1;
}

int lstat64(const char *path, struct stat64 *info)
{
	char buffer[PATH_MAX];

	path = redirect(path, buffer, sizeof(buffer));
	return path ? REAL(stat64_fn, lstat64)(path, info) : -1;
}

int unlink(const char *path)
{
	char buffer[PATH_MAX];

	path = redirect(path, buffer, sizeof(buffer));
	return path ? REAL(unlink_fn, unlink)(path) : -1;
}

int rename(const char *from, const char *to)
{
	char from_buffer[PATH_MAX], to_buffer[PATH_MAX];

	from = redirect(from, from_buffer, sizeof(from_buffer));
	if (!from)
		return -1;
	to = redirect(to, to_buffer, sizeof(to_buffer));
	return to ? REAL(rename_fn, rename)(from, to) : -1;
}

DIR *opendir(const char *path)
{
	char buffer[PATH_MAX];

	path = redirect(path, buffer, sizeof(buffer));
	return path ? REAL(opendir_fn, opendir)(path) : NULL;
}

ssize_t read(int fd, void *buffer, size_t count)
{
	struct sim_fd *sim = device_of(fd);

	return sim ? device_read(fd, sim, buffer, count) : REAL(read_fn, read)(fd, buffer, count);
}

ssize_t write(int fd, const void *buffer, size_t count)
{
	struct sim_fd *sim = device_of(fd);

	return sim ? device_write(fd, sim, buffer, count)
		   : REAL(write_fn, write)(fd, buffer, count);
}

/* The device ignores the offset (hvt_op_read/hvt_op_write never look at it). */
ssize_t pread(int fd, void *buffer, size_t count, off_t offset)
{
	struct sim_fd *sim = device_of(fd);

	return sim ? device_read(fd, sim, buffer, count)
		   : REAL(pread_fn, pread)(fd, buffer, count, offset);
}

ssize_t pread64(int fd, void *buffer, size_t count, off_t offset)
{
	return pread(fd, buffer, count, offset);
}

ssize_t pwrite(int fd, const void *buffer, size_t count, off_t offset)
{
	struct sim_fd *sim = device_of(fd);

	return sim ? device_write(fd, sim, buffer, count)
		   : REAL(pwrite_fn, pwrite)(fd, buffer, count, offset);
}

ssize_t pwrite64(int fd, const void *buffer, size_t count, off_t offset)
{
	return pwrite(fd, buffer, count, offset);
}

int close(int fd)
{
	/* Closing the connection is the release: the simulator runs the reset. */
	forget(fd);
	return REAL(close_fn, close)(fd);
}

int poll(struct pollfd *fds, nfds_t count, int timeout_ms)
{
	if (!has_device(fds, count))
		return REAL(poll_fn, poll)(fds, count, timeout_ms);
	return device_poll(fds, count, timeout_ms, NULL, NULL, 0);
}

int ppoll(struct pollfd *fds, nfds_t count, const struct timespec *timeout,
	  const sigset_t *mask)
{
	if (!has_device(fds, count))
		return REAL(ppoll_fn, ppoll)(fds, count, timeout, mask);
	return device_poll(fds, count, -1, timeout, mask, 1);
}
