import NIOCore

/// The first receive buffer of each connection. NIO keeps a connection's receive buffer for
/// reuse for as long as the connection lives, at the size its allocator asked for; with NIO's
/// default (2 KiB first) an idle relayed WebSocket holds 4 KiB of them, a third of its memory.
/// A request head or a 101 rarely needs that much, and the allocator grows the next buffer as
/// soon as one read fills it, so big heads and busy relays still read in large pieces.
enum ReceiveBuffers {
    /// Client connections: a request head (browsers' upgrade requests are 0.3–1 KiB; cookies
    /// make some larger, which then take a second read).
    static let client = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536)
    /// Backend connections: a 101 or a response head first.
    static let backend = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
}
