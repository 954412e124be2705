import NIOCore
import NIOEmbedded

/// A `BackendDialer` of embedded channels on one `EmbeddedEventLoop`: each dial makes a channel,
/// sets it up as the gateway asks and connects it; the probe then plays the backend, reading what
/// the gateway wrote and writing its answers in. Everything runs on the thread that drives the
/// embedded loop, hence `@unchecked Sendable`.
package final class EmbeddedDialer: BackendDialer, @unchecked Sendable {
    private let loop: EmbeddedEventLoop
    private var dialed: EmbeddedChannel?
    private static let address = try! SocketAddress(ipAddress: "127.0.0.1", port: 9)

    package init(loop: EmbeddedEventLoop) {
        self.loop = loop
    }

    package func dial(on eventLoop: any EventLoop, initialize: @escaping (any Channel) throws -> Void) -> EventLoopFuture<any Channel> {
        let channel = EmbeddedChannel(loop: loop)
        do {
            try initialize(channel)
        } catch {
            return loop.makeFailedFuture(error)
        }
        channel.connect(to: Self.address, promise: nil)
        dialed = channel
        return loop.makeSucceededFuture(channel)
    }

    /// The channel dialed since the last call, if any.
    package func takeDialed() -> EmbeddedChannel? {
        defer { dialed = nil }
        return dialed
    }
}

/// What a probe found wrong: the gateway did not do what the scenario expects (no 101, a
/// connection left open, an entry left in the registry), so its counts would mean nothing.
package struct ProbeFailure: Error, CustomStringConvertible {
    package let description: String
    init(_ description: String) { self.description = description }
}

extension EmbeddedChannel {
    /// Reads and drops everything written to the channel; returns how many bytes that was.
    @discardableResult
    func drainOutbound() throws -> Int {
        var bytes = 0
        while let data = try readOutbound(as: IOData.self) { bytes += data.readableBytes }
        return bytes
    }
}
