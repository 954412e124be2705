import NIOCore

/// How a connection to a backend is opened when not by a socket. The gateway dials sockets
/// (`Backend`'s own `ClientBootstrap` path); the cost benchmarks hand a route a dialer of
/// embedded channels, so a whole upgrade or proxied request runs, and is counted, with no socket.
package protocol BackendDialer: Sendable {
    /// A connected channel on `eventLoop`, its pipeline set up by `initialize` first.
    func dial(on eventLoop: any EventLoop, initialize: @escaping (any Channel) throws -> Void) -> EventLoopFuture<any Channel>
}
