import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import SluiceConfig
import Testing
@testable import Sluice

/// The HTTP side of a client connection, on an `EmbeddedChannel`: limits, routing, timeouts.
@Suite("HTTP gateway handler")
struct HTTPGatewayHandlerTests {
    /// A connection with a WebSocket route at /ws and the demo page at /.
    final class Connection {
        let channel = EmbeddedChannel()

        init(limits: HTTPLimits = HTTPLimits()) throws {
            var wsRoute = RouteConfiguration(name: "ws", match: RouteMatch(pathPrefix: "/ws"))
            wsRoute.backends = [try BackendURL.parse("ws://127.0.0.1:1")]
            var demo = RouteConfiguration(name: "demo", match: RouteMatch(host: "demo.test", pathPrefix: "/"))
            demo.builtin = .demo
            let routes = [
                Route(configuration: wsRoute, backends: try BackendSet.make(for: wsRoute, routeIndex: 0, builtinPorts: [:])),
                Route(configuration: demo, backends: nil),
            ]
            try HTTPGatewayHandler.install(
                on: channel.pipeline.syncOperations,
                configuration: .init(listener: "test", tls: false, limits: limits),
                routing: ListenerRouting(.init(routes: RouteTable(routes: routes, listener: "test"), trustedProxies: [])),
                services: GatewayServices(
                    registry: ConnectionRegistry(), metrics: GatewayMetrics(), accessLog: AccessLog(), limits: GlobalLimits(), logger: Logger(label: "test")
                )
            )
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        /// Sends raw request bytes and returns everything written back.
        func send(_ text: String) throws -> String {
            try channel.writeInbound(ByteBuffer(string: text))
            return readAll()
        }

        func readAll() -> String {
            var output = ""
            while let buffer = try? channel.readOutbound(as: ByteBuffer.self) {
                output += String(buffer: buffer)
            }
            return output
        }

        var isOpen: Bool { channel.isActive }
    }

    static func status(_ response: String) -> Int? {
        response.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap { Int($0) }
    }

    @Test("an unknown path is a 404 and the connection stays open")
    func notFound() throws {
        let connection = try Connection()
        let response = try connection.send("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(Self.status(response) == 404)
        #expect(connection.isOpen)
    }

    @Test("a plain request to a WebSocket route is a 426 naming websocket")
    func upgradeRequired() throws {
        let connection = try Connection()
        let response = try connection.send("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(Self.status(response) == 426)
        #expect(response.lowercased().contains("upgrade: websocket"))
    }

    @Test("pipelined requests are answered in order on one connection")
    func pipelining() throws {
        let connection = try Connection()
        let response = try connection.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: demo.test\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        let statuses = response.components(separatedBy: "HTTP/1.1 ").dropFirst().map { Int($0.prefix(3)) }
        #expect(statuses == [404, 200, 426])
    }

    @Test("the demo page is served at / for its host")
    func demoPage() throws {
        let connection = try Connection()
        let response = try connection.send("GET / HTTP/1.1\r\nHost: demo.test\r\n\r\n")
        #expect(Self.status(response) == 200)
        #expect(response.contains("new WebSocket"))
    }

    @Test("the demo page is the page itself, not a catch-all: /favicon.ico is a 404")
    func demoIsNoCatchAll() throws {
        let connection = try Connection()
        #expect(Self.status(try connection.send("GET /favicon.ico HTTP/1.1\r\nHost: demo.test\r\n\r\n")) == 404)
        #expect(Self.status(try connection.send("GET /index.html HTTP/1.1\r\nHost: demo.test\r\n\r\n")) == 200)
    }

    @Test("an absolute-form target's authority is the host routed by, not the Host field")
    func absoluteForm() throws {
        let connection = try Connection()
        #expect(Self.status(try connection.send("GET http://demo.test/ HTTP/1.1\r\nHost: x\r\n\r\n")) == 200)
        #expect(Self.status(try connection.send("GET http://x/ HTTP/1.1\r\nHost: demo.test\r\n\r\n")) == 404)
        #expect(Self.status(try connection.send("GET HTTP://DEMO.test:80/?q HTTP/1.1\r\nHost: x\r\n\r\n")) == 200)
        #expect(connection.isOpen)
        // The authority is held to the same syntax as a Host field.
        #expect(Self.status(try connection.send("GET http://user@demo.test/ HTTP/1.1\r\nHost: demo.test\r\n\r\n")) == 400)
        #expect(!connection.isOpen)
    }

    @Test("an upgrade to anything but websocket is no WebSocket attempt; the connection ends after its answer")
    func otherUpgrade() throws {
        let connection = try Connection()
        let response = try connection.send("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n\r\n")
        #expect(Self.status(response) == 426)
        #expect(response.lowercased().contains("connection: close"))
        #expect(!connection.isOpen)
        let demo = try Connection()
        #expect(Self.status(try demo.send("GET / HTTP/1.1\r\nHost: demo.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")) == 200)
        #expect(!demo.isOpen)
    }

    @Test("a malformed upgrade is a 400 and closes")
    func badUpgrade() throws {
        let connection = try Connection()
        let response = try connection.send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
        #expect(Self.status(response) == 400)
        #expect(!connection.isOpen)
    }

    @Test("too many headers or too many header bytes is a 431; a long request line a 414")
    func limits() throws {
        var limits = HTTPLimits()
        limits.maxHeaders = 5
        limits.maxHeaderBytes = 512
        limits.maxRequestLine = 128
        let headers = (0..<6).map { "X-\($0): y\r\n" }.joined()
        #expect(Self.status(try Connection(limits: limits).send("GET / HTTP/1.1\r\nHost: x\r\n\(headers)\r\n")) == 431)
        let big = "X-Big: " + String(repeating: "a", count: 600) + "\r\n"
        #expect(Self.status(try Connection(limits: limits).send("GET / HTTP/1.1\r\nHost: x\r\n\(big)\r\n")) == 431)
        let long = "/" + String(repeating: "a", count: 200)
        #expect(Self.status(try Connection(limits: limits).send("GET \(long) HTTP/1.1\r\nHost: x\r\n\r\n")) == 414)
    }

    @Test("malformed requests are a 400 and close", arguments: [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        // A Host that is no uri-host[:port], on the fast path and through NIO's decoder (a body).
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: evil/x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: user@x\r\nContent-Length: 1\r\n\r\nz",
        "GET / HTTP/1.1\r\nHost: x:80a\r\n\r\n",
    ])
    func malformed(request: String) throws {
        let connection = try Connection()
        #expect(Self.status(try connection.send(request)) == 400)
        #expect(!connection.isOpen)
    }

    @Test("a client that sends no full head in time gets a 408 and is closed")
    func headerTimeout() throws {
        var limits = HTTPLimits()
        limits.headerTimeout = .seconds(2)
        let connection = try Connection(limits: limits)
        #expect(try connection.send("GET / HTTP/1.1\r\nHo").isEmpty)
        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(connection.readAll().isEmpty)
        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(Self.status(connection.readAll()) == 408)
        #expect(!connection.isOpen)
    }

    @Test("the header timer re-arms after each kept-alive response")
    func headerTimeoutKeepAlive() throws {
        var limits = HTTPLimits()
        limits.headerTimeout = .seconds(2)
        let connection = try Connection(limits: limits)
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(Self.status(try connection.send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n")) == 404)
        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1500))
        #expect(connection.isOpen)
        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
        #expect(Self.status(connection.readAll()) == 408)
    }
}
