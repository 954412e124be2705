#if canImport(CLibURing)
import CLibURing
import Glibc

/// The io_uring engine of `sluice-bench tunnel` (issue 25, phase 1): the same byte relay as the
/// NIO tunnel, on one thread and one ring, to measure how low a relay's cost per message can go
/// below NIO's. Multishot accept; per socket one multishot receive into a provided-buffer ring
/// (the kernel picks the buffer, no read is armed per message); the received buffer is sent to
/// the other socket as it is (no copy) and given back to the ring once sent; completions are
/// reaped in batches and every submission of a wake-up goes in one `io_uring_enter`. One send
/// in flight per socket, the rest queued in order, so bytes never reorder. Nothing is allocated
/// and nothing is reference-counted per message: buffers, queues and peers live in arrays made
/// once, indexed by descriptor.
final class UringTunnel {
    static let bufferSize = 32 * 1024
    static let bufferCount: UInt32 = 4096
    static let group: UInt16 = 7
    static let maxDescriptors = 65536

    private enum Op: UInt64 { case accept = 1, recv = 2, send = 3 }

    /// A received buffer waiting to be (or being) sent to a socket.
    private struct Pending {
        var buffer: UInt16
        var offset: Int32
        var length: Int32
    }

    /// What is queued for one socket: `items[head...]`, the first in flight when `sending`.
    private struct SendQueue {
        var items: [Pending] = []
        var head = 0
        var sending = false
        var isEmpty: Bool { head == items.count }
    }

    private var ring = io_uring()
    private let buffers: UnsafeMutableRawPointer
    private let bufferRing: UnsafeMutablePointer<io_uring_buf_ring>
    private let mask: Int32
    private var returned: Int32 = 0
    private var peer: [Int32]
    private var queues: [SendQueue]
    private var closed: [Bool]
    private let listener: Int32
    private var backend: sockaddr_in

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    init(listener: Int32, backendPort: UInt16) throws {
        self.listener = listener
        var params = io_uring_params()
        params.flags = UInt32(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)
        var result = io_uring_queue_init_params(4096, &ring, &params)
        if result < 0 {
            // Older kernels: no deferred task running.
            params = io_uring_params()
            result = io_uring_queue_init_params(4096, &ring, &params)
        }
        guard result >= 0 else { throw Failure(description: "io_uring_queue_init: \(String(cString: strerror(-result)))") }
        buffers = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize * Int(Self.bufferCount), alignment: 4096)
        var error: Int32 = 0
        guard let made = sluice_buf_ring_setup(&ring, Self.bufferCount, Self.group, &error) else {
            throw Failure(description: "provided-buffer ring: \(String(cString: strerror(-error)))")
        }
        bufferRing = made
        mask = sluice_buf_ring_mask(Self.bufferCount)
        for index in 0..<Int(Self.bufferCount) {
            io_uring_buf_ring_add(bufferRing, buffers + index * Self.bufferSize, UInt32(Self.bufferSize), UInt16(index), mask, Int32(index))
        }
        io_uring_buf_ring_advance(bufferRing, Int32(Self.bufferCount))
        peer = [Int32](repeating: -1, count: Self.maxDescriptors)
        queues = [SendQueue](repeating: SendQueue(), count: Self.maxDescriptors)
        closed = [Bool](repeating: true, count: Self.maxDescriptors)
        backend = sockaddr_in()
        backend.sin_family = sa_family_t(AF_INET)
        backend.sin_port = backendPort.bigEndian
        backend.sin_addr.s_addr = inet_addr("127.0.0.1")
    }

    private func data(_ op: Op, _ fd: Int32, _ buffer: UInt16 = 0) -> UInt64 {
        op.rawValue << 56 | UInt64(UInt32(bitPattern: fd)) << 16 | UInt64(buffer)
    }

    private func sqe() -> UnsafeMutablePointer<io_uring_sqe> {
        if let entry = io_uring_get_sqe(&ring) { return entry }
        // The submission queue is full: hand it to the kernel and take a fresh one.
        io_uring_submit(&ring)
        return io_uring_get_sqe(&ring)!
    }

    /// Runs until `deadline` (seconds of CLOCK_MONOTONIC).
    func run(until deadline: Double) {
        sluice_prep_accept_multishot(sqe(), listener, data(.accept, listener))
        let batch = UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>.allocate(capacity: 512)
        var timeout = __kernel_timespec(tv_sec: 1, tv_nsec: 0)
        while now() < deadline {
            var waited: UnsafeMutablePointer<io_uring_cqe>?
            _ = io_uring_submit_and_wait_timeout(&ring, &waited, 1, &timeout, nil)
            while true {
                let count = io_uring_peek_batch_cqe(&ring, batch, 512)
                if count == 0 { break }
                for index in 0..<Int(count) { handle(batch[index]!) }
                io_uring_cq_advance(&ring, count)
            }
            if returned > 0 {
                io_uring_buf_ring_advance(bufferRing, returned)
                returned = 0
            }
        }
    }

    private func now() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    private func handle(_ cqe: UnsafeMutablePointer<io_uring_cqe>) {
        let user = cqe.pointee.user_data
        let fd = Int32(truncatingIfNeeded: (user >> 16) & 0xFFFF_FFFF)
        let result = cqe.pointee.res
        switch Op(rawValue: user >> 56) {
        case .accept:
            if result >= 0 { accepted(result) }
            if sluice_cqe_has_more(cqe) == 0 { sluice_prep_accept_multishot(sqe(), listener, data(.accept, listener)) }
        case .recv:
            if result > 0, sluice_cqe_has_buffer(cqe) != 0 {
                let buffer = UInt16(sluice_cqe_buffer_id(cqe))
                let to = peer[Int(fd)]
                if to >= 0, !closed[Int(to)] {
                    enqueue(Pending(buffer: buffer, offset: 0, length: result), to: to)
                } else {
                    giveBack(buffer)
                }
                if sluice_cqe_has_more(cqe) == 0, !closed[Int(fd)] { arm(fd) }
            } else if result == -ENOBUFS {
                // Every buffer is queued for sending somewhere: receive again once they return.
                if !closed[Int(fd)] { arm(fd) }
            } else {
                if sluice_cqe_has_buffer(cqe) != 0 { giveBack(UInt16(sluice_cqe_buffer_id(cqe))) }
                closePair(fd)
            }
        case .send:
            sent(fd, result)
        case nil:
            break
        }
    }

    private func accepted(_ client: Int32) {
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard server >= 0, Int(client) < Self.maxDescriptors, Int(server) < Self.maxDescriptors else {
            close(client)
            if server >= 0 { close(server) }
            return
        }
        let connected = withUnsafePointer(to: &backend) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(client)
            close(server)
            return
        }
        var one: Int32 = 1
        setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(server, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        for (a, b) in [(client, server), (server, client)] {
            peer[Int(a)] = b
            closed[Int(a)] = false
            queues[Int(a)].items.removeAll(keepingCapacity: true)
            queues[Int(a)].head = 0
            queues[Int(a)].sending = false
            arm(a)
        }
    }

    private func arm(_ fd: Int32) {
        sluice_prep_recv_multishot(sqe(), fd, Self.group, data(.recv, fd))
    }

    private func enqueue(_ pending: Pending, to fd: Int32) {
        queues[Int(fd)].items.append(pending)
        if !queues[Int(fd)].sending { sendNext(fd) }
    }

    private func sendNext(_ fd: Int32) {
        guard !queues[Int(fd)].isEmpty else {
            queues[Int(fd)].sending = false
            queues[Int(fd)].items.removeAll(keepingCapacity: true)
            queues[Int(fd)].head = 0
            return
        }
        let item = queues[Int(fd)].items[queues[Int(fd)].head]
        queues[Int(fd)].sending = true
        let start = buffers + Int(item.buffer) * Self.bufferSize + Int(item.offset)
        sluice_prep_send(sqe(), fd, start, Int(item.length - item.offset), data(.send, fd, item.buffer))
    }

    private func sent(_ fd: Int32, _ result: Int32) {
        // Mutated in place: a copy of the queue would copy its array (an allocation per message).
        let slot = Int(fd)
        guard queues[slot].sending, !queues[slot].isEmpty else { return }
        guard result > 0, !closed[slot] else {
            // The destination is gone: drop what was queued for it.
            for index in queues[slot].head..<queues[slot].items.count { giveBack(queues[slot].items[index].buffer) }
            queues[slot].items.removeAll(keepingCapacity: true)
            queues[slot].head = 0
            queues[slot].sending = false
            closePair(fd)
            return
        }
        let head = queues[slot].head
        queues[slot].items[head].offset += result
        if queues[slot].items[head].offset >= queues[slot].items[head].length {
            giveBack(queues[slot].items[head].buffer)
            queues[slot].head += 1
        }
        queues[slot].sending = false
        sendNext(fd)
    }

    private func giveBack(_ buffer: UInt16) {
        io_uring_buf_ring_add(bufferRing, buffers + Int(buffer) * Self.bufferSize, UInt32(Self.bufferSize), buffer, mask, returned)
        returned += 1
    }

    /// One side ended: both close (a relay has nothing to do with half a connection).
    private func closePair(_ fd: Int32) {
        let other = peer[Int(fd)]
        for side in [fd, other] where side >= 0 && !closed[Int(side)] {
            closed[Int(side)] = true
            peer[Int(side)] = -1
            if !queues[Int(side)].sending {
                for index in queues[Int(side)].head..<queues[Int(side)].items.count { giveBack(queues[Int(side)].items[index].buffer) }
                queues[Int(side)].items.removeAll(keepingCapacity: true)
                queues[Int(side)].head = 0
            }
            shutdown(side, Int32(SHUT_RDWR))
            close(side)
        }
    }
}
#endif
