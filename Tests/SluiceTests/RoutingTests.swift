import Testing
import SluiceConfig
@testable import Sluice

@Suite("Request path normalisation")
struct RequestPathTests {
    @Test("normalisation", arguments: [
        ("/", "/"), ("/a/b", "/a/b"), ("/a/./b", "/a/b"), ("/a/../b", "/b"), ("/../../etc", "/etc"),
        ("//admin", "/admin"), ("/public/%2e%2e/admin", "/admin"), ("/public/%2E%2E/admin", "/admin"),
        ("/%61dmin", "/admin"), ("/a%2Fb", "/a%2Fb"), ("/a%2fb", "/a%2Fb"), ("/a/b/", "/a/b/"), ("/a/b/..", "/a/"),
        ("/ws?x=1", "/ws"), ("http://example.com/ws/x?y", "/ws/x"), ("/a.../b.", "/a.../b."), ("/.../b", "/.../b"),
        ("/a/.", "/a/"), ("/a//", "/a/"), ("/.a/..b/", "/.a/..b/"), ("/a#frag", "/a"),
    ])
    func normalise(input: String, expected: String) throws {
        #expect(try RequestPath.parse(input).path == expected)
    }

    @Test("a path taken as already normal is one segment-by-segment normalisation leaves as it is")
    func fastPath() {
        var paths = ["/"]
        for _ in 1...6 { paths += paths.flatMap { path in ["a", ".", "/"].map { path + $0 } } }
        var normal = 0
        for path in Set(paths) where RequestPath.isNormalised(path) {
            normal += 1
            #expect(RequestPath.mergingSegments(path) == path, "\(path)")
        }
        #expect(normal > 50)
        #expect(!RequestPath.isNormalised("/a/..") && !RequestPath.isNormalised("//") && !RequestPath.isNormalised("/./"))
    }

    @Test("an absolute-form target names its authority; other forms name none")
    func authority() {
        #expect(RequestPath.authority(of: "http://example.com/ws/x?y") == "example.com")
        #expect(RequestPath.authority(of: "HTTPS://Example.com:8443?q") == "Example.com:8443")
        #expect(RequestPath.authority(of: "ws://[::1]:9/") == "[::1]:9")
        #expect(RequestPath.authority(of: "http://h#f") == "h")
        #expect(RequestPath.authority(of: "/a/http://b") == nil)
        #expect(RequestPath.authority(of: "ftp://h/") == nil)
        #expect(RequestPath.authority(of: "*") == nil)
    }

    @Test("the query is kept as sent")
    func query() throws {
        let path = try RequestPath.parse("/a/../ws?token=x&y=%2e")
        #expect(path.query == "token=x&y=%2e")
        #expect(path.target == "/ws?token=x&y=%2e")
    }

    @Test(
        "a target already in normal form is taken in one scan, and comes out as the longer way would give it",
        arguments: [
            ("/", "/", nil), ("/app/a?q=1", "/app/a", "q=1"), ("/app/?", "/app/", ""), ("/a?x=%zz/../b", "/a", "x=%zz/../b"),
            ("/a/b#frag", "/a/b", nil), ("/a?b#c", "/a", "b"), ("/a//b?q", "/a/b", "q"), ("/a/%7e?q", "/a/~", "q"),
            ("http://h/a?q", "/a", "q"), ("/a/./b", "/a/b", nil),
        ] as [(String, String, String?)]
    )
    func normalForm(input: String, path: String, query: String?) throws {
        let parsed = try RequestPath.parse(input)
        #expect(parsed.path == path && parsed.query == query)
        #expect(parsed.target == path + (query.map { "?" + $0 } ?? ""))
        #expect(parsed == RequestPath(path: path, query: query))
    }

    @Test("malformed targets are refused", arguments: ["*", "ws", "/a%zz", "/a%2", "ftp://x/y"])
    func refused(input: String) {
        #expect(throws: RequestPath.Problem.self) { try RequestPath.parse(input) }
    }
}

@Suite("Router")
struct RouterTests {
    func route(_ name: String, host: String? = nil, prefix: String = "/", listeners: [String] = []) -> RouteConfiguration {
        var route = RouteConfiguration(name: name, match: RouteMatch(host: host, pathPrefix: prefix))
        route.listeners = listeners
        return route
    }

    var router: Router {
        Router(routes: [
            route("any-root"),
            route("any-ws", prefix: "/ws"),
            route("any-ws-admin", prefix: "/ws/admin"),
            route("exact", host: "api.example.com", prefix: "/ws"),
            route("wild", host: "*.example.com", prefix: "/"),
            route("deeper-wild", host: "*.eu.example.com", prefix: "/"),
            route("other-listener", host: "only.example.com", listeners: ["internal"]),
        ], listener: "public")
    }

    @Test("longest prefix on segment boundaries", arguments: [
        ("/ws", "any-ws"), ("/ws/x", "any-ws"), ("/wsx", "any-root"), ("/ws/admin", "any-ws-admin"),
        ("/ws/administrator", "any-ws"), ("/", "any-root"),
    ])
    func prefixes(path: String, expected: String) {
        #expect(router.route(host: "unknown.test", path: path)?.name == expected)
    }

    @Test("exact host beats wildcard, wildcard beats any; port and case ignored")
    func hosts() {
        #expect(router.route(host: "API.example.com:8443", path: "/ws/1")?.name == "exact")
        #expect(router.route(host: "api.example.com", path: "/other")?.name == "wild")
        #expect(router.route(host: "www.example.com", path: "/ws")?.name == "wild")
        #expect(router.route(host: "a.eu.example.com", path: "/")?.name == "deeper-wild")
        #expect(router.route(host: "example.com", path: "/ws")?.name == "any-ws")
        #expect(router.route(host: nil, path: "/ws")?.name == "any-ws")
        #expect(router.route(host: "[::1]:8443", path: "/")?.name == "any-root")
    }

    @Test("routes scoped to another listener are not seen")
    func listenerScope() {
        #expect(router.route(host: "only.example.com", path: "/")?.name == "wild")
    }

    @Test("no route is nil")
    func noRoute() {
        let router = Router(routes: [route("ws", prefix: "/ws")], listener: "public")
        #expect(router.route(host: "x", path: "/") == nil)
        #expect(router.route(host: "x", path: "/wsx") == nil)
    }

    @Test("dot segments cannot reach a protected route through an unprotected prefix")
    func dotSegmentBypass() throws {
        let router = Router(routes: [route("public", prefix: "/public"), route("admin", prefix: "/admin")], listener: "public")
        for attempt in ["/public/../admin", "/public/%2e%2e/admin", "/public/./../admin/x", "//admin"] {
            let path = try RequestPath.parse(attempt).path
            #expect(router.route(host: nil, path: path)?.name == "admin", "\(attempt)")
        }
    }
}
