import ArgumentParser
import NIOCore
import NIOPosix

/// The `--listen` and `--duration` every serving subcommand takes (`echo`, `tunnel`, the
/// floors): a loopback address and a life that ends by itself.
struct ServeOptions: ParsableArguments {
    @Option(help: "Loopback host:port to listen on (port 0 = chosen by the OS).")
    var listen: String = "127.0.0.1:0"

    @Option(help: "Stop after this many seconds.")
    var duration: Int = 3600
}

/// The listening socket of the servers measured beside Sluice (the tunnel and the floors), set
/// up alike so they differ only in what their connections do: a deep backlog for unpaced
/// opens, address reuse, TCP_NODELAY on accepted sockets.
enum LoopbackServer {
    static func bind(
        _ target: LoopbackTarget, group: any EventLoopGroup,
        childChannelInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer(childChannelInitializer)
            .bind(host: target.host, port: target.port).get()
    }
}
