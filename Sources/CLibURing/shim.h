// liburing (Debian's liburing-dev) for the io_uring engine of `sluice-bench tunnel`.
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

// The few liburing helpers Swift cannot call as written (macros), as functions.
static inline unsigned sluice_cqe_buffer_id(const struct io_uring_cqe *cqe) {
    return cqe->flags >> IORING_CQE_BUFFER_SHIFT;
}
static inline int sluice_cqe_has_more(const struct io_uring_cqe *cqe) {
    return (cqe->flags & IORING_CQE_F_MORE) != 0;
}
static inline int sluice_cqe_has_buffer(const struct io_uring_cqe *cqe) {
    return (cqe->flags & IORING_CQE_F_BUFFER) != 0;
}
static inline int sluice_buf_ring_mask(unsigned entries) {
    return io_uring_buf_ring_mask(entries);
}

static inline void sluice_prep_recv_multishot(struct io_uring_sqe *sqe, int fd, unsigned short group, __u64 data) {
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = group;
    io_uring_sqe_set_data64(sqe, data);
}

static inline void sluice_prep_send(struct io_uring_sqe *sqe, int fd, const void *buf, size_t len, __u64 data) {
    io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, data);
}

static inline void sluice_prep_accept_multishot(struct io_uring_sqe *sqe, int fd, __u64 data) {
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, data);
}

/// A provided-buffer ring of `entries` (a power of two) registered as `group`; NULL and
/// `*error` set when the kernel refuses.
static inline struct io_uring_buf_ring *sluice_buf_ring_setup(struct io_uring *ring, unsigned entries, unsigned short group, int *error) {
    size_t size = entries * sizeof(struct io_uring_buf);
    void *memory = NULL;
    if (posix_memalign(&memory, 4096, size) != 0) { *error = -ENOMEM; return NULL; }
    memset(memory, 0, size);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long) memory;
    reg.ring_entries = entries;
    reg.bgid = group;
    int ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret != 0) { free(memory); *error = ret; return NULL; }
    io_uring_buf_ring_init((struct io_uring_buf_ring *) memory);
    return (struct io_uring_buf_ring *) memory;
}
