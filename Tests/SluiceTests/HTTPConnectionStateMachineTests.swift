import NIOCore
import NIOHTTP1
import Testing
@testable import Sluice

/// A client connection's HTTP/1.1 phases with no channel: plain values for answers, exchanges
/// and upgrades, every event in every phase.
@Suite("HTTP connection state machine")
struct HTTPConnectionStateMachineTests {
    typealias Machine = HTTPConnectionStateMachine<String, String, String>

    /// The machine behind a reference, so `#expect` can call its mutating events.
    final class Driver {
        var machine = Machine()
        var phase: Machine.Phase { machine.phase }
        var quiescing: Bool { machine.quiescing }
        var isAuthorizing: Bool { machine.isAuthorizing }
        var clientHalfClosed: Bool { machine.clientHalfClosed }
        func readWanted() -> Bool { machine.readWanted() }
        func resumeReading() -> Bool { machine.resumeReading() }
        func backendFull(_ full: Bool) -> Bool { machine.backendFull(full) }
        func received(_ part: HTTPServerRequestPart) -> Machine.PartAction { machine.received(part) }
        func nextQueued() -> Machine.PartAction? { machine.nextQueued() }
        func decided(_ answer: String) { machine.decided(answer) }
        func authorizing(_ answer: String) { machine.authorizing(answer) }
        func authorized() -> String? { machine.authorized() }
        func proxying(_ exchange: String) -> [HTTPServerRequestPart] { machine.proxying(exchange) }
        func upgrading(_ upgrade: String) { machine.upgrading(upgrade) }
        func relaying() -> [ByteBuffer] { machine.relaying() }
        func answered(keepAlive: Bool) -> Bool { machine.answered(keepAlive: keepAlive) }
        func inputClosed() -> Bool { machine.inputClosed() }
        func closeIfClientDone() -> Bool { machine.closeIfClientDone() }
        func quiesce() -> Bool { machine.quiesce() }
        func close() -> Machine.Phase { machine.close() }
    }

    static func head(_ uri: String) -> HTTPServerRequestPart {
        .head(HTTPRequestHead(version: .http1_1, method: .GET, uri: uri))
    }

    static let body = HTTPServerRequestPart.body(ByteBuffer(string: "abc"))

    /// A short name for the phase, for tables.
    static func name(_ phase: Machine.Phase) -> String {
        switch phase {
        case .idle: "idle"
        case .pending(let answer): "pending(\(answer))"
        case .authorizing(let answer): "authorizing(\(answer))"
        case .proxying(let exchange): "proxying(\(exchange))"
        case .upgrading(let upgrade): "upgrading(\(upgrade))"
        case .closed: "closed"
        }
    }

    static func name(_ action: Machine.PartAction) -> String {
        switch action {
        case .decide(let head): "decide(\(head.uri))"
        case .body(let exchange, let buffer): "body(\(exchange),\(buffer.readableBytes))"
        case .end(let exchange): "end(\(exchange))"
        case .perform(let answer): "perform(\(answer))"
        case .none: "none"
        }
    }

    /// A machine in each phase, reached by the events that lead there.
    static func machine(in phase: String) -> Driver {
        let machine = Driver()
        guard phase != "idle" else { return machine }
        _ = machine.received(head("/a"))
        switch phase {
        case "pending": machine.decided("404")
        case "authorizing": machine.authorizing("proxy")
        case "proxying": _ = machine.proxying("exchange")
        case "upgrading":
            machine.decided("upgrade")
            _ = machine.received(.end(nil))
            machine.upgrading("upgrade")
        case "closed": _ = machine.close()
        default: Issue.record("no phase \(phase)")
        }
        return machine
    }

    @Test("reads: held while authenticating or upgrading, and while a full backend or a queue waits")
    func reads() {
        for (phase, reads) in [("idle", true), ("pending", true), ("authorizing", false), ("proxying", true), ("upgrading", false), ("closed", true)] {
            let machine = Self.machine(in: phase)
            #expect(machine.readWanted() == reads, "\(phase)")
            // A held read is issued once, when resumed.
            #expect(machine.resumeReading() == !reads, "\(phase)")
            #expect(machine.resumeReading() == false, "\(phase)")
        }
        let proxying = Self.machine(in: "proxying")
        #expect(proxying.backendFull(true) == false)
        #expect(proxying.readWanted() == false)
        #expect(proxying.backendFull(false) == true)
        #expect(proxying.readWanted() == true)
        // A request pipelined behind one that has ended waits, and so do reads.
        _ = proxying.received(.end(nil))
        #expect(Self.name(proxying.received(Self.head("/b"))) == "none")
        #expect(proxying.readWanted() == false)
    }

    @Test("each request part in each phase")
    func parts() {
        // (phase, part, action, phase after)
        let table: [(String, HTTPServerRequestPart, String, String)] = [
            ("idle", Self.head("/x"), "decide(/x)", "idle"),
            ("idle", Self.body, "none", "idle"),
            ("idle", .end(nil), "none", "idle"),
            ("pending", Self.head("/x"), "none", "pending(404)"),
            ("pending", Self.body, "none", "pending(404)"),
            ("pending", .end(nil), "perform(404)", "pending(404)"),
            ("authorizing", Self.body, "none", "authorizing(proxy)"),
            ("authorizing", .end(nil), "none", "authorizing(proxy)"),
            ("proxying", Self.body, "body(exchange,3)", "proxying(exchange)"),
            ("proxying", .end(nil), "end(exchange)", "proxying(exchange)"),
            ("proxying", Self.head("/x"), "none", "proxying(exchange)"),
            ("upgrading", Self.body, "none", "upgrading(upgrade)"),
            ("closed", Self.head("/x"), "none", "closed"),
            ("closed", Self.body, "none", "closed"),
        ]
        for (phase, part, action, after) in table {
            let machine = Self.machine(in: phase)
            #expect(Self.name(machine.received(part)) == action, "\(phase) + \(part)")
            #expect(Self.name(machine.phase) == after, "\(phase) + \(part)")
        }
    }

    @Test("body bytes read while an upgrade is in flight (HTTP/2 DATA before the 200) go to the relay, in order, once")
    func heldForTheRelay() {
        // Authentication first, then the upgrade: what came during both is kept.
        let machine = Self.machine(in: "authorizing")
        _ = machine.received(.body(ByteBuffer(string: "one")))
        #expect(machine.authorized() == "proxy")
        machine.upgrading("upgrade")
        #expect(machine.readWanted() == false)
        #expect(Self.name(machine.received(.body(ByteBuffer(string: "two")))) == "none")
        _ = machine.received(.end(nil))
        let early = machine.relaying()
        #expect(early.map { String(buffer: $0) } == ["one", "two"])
        #expect(Self.name(machine.phase) == "closed")
        #expect(machine.relaying().isEmpty)
        // An upgrade refused instead: its early bytes go with the close.
        let refused = Self.machine(in: "upgrading")
        _ = refused.received(Self.body)
        _ = refused.close()
        #expect(refused.relaying().isEmpty)
        // Or with its answer, when the connection goes on: the next request's exchange gets
        // none of them.
        let answered = Self.machine(in: "upgrading")
        _ = answered.received(Self.body)
        #expect(answered.answered(keepAlive: true))
        #expect(Self.name(answered.received(Self.head("/b"))) == "decide(/b)")
        #expect(answered.proxying("next").isEmpty)
    }

    @Test("parts read while authentication decides are replayed to the exchange, once")
    func heldForAuthentication() {
        let machine = Self.machine(in: "authorizing")
        _ = machine.received(Self.body)
        _ = machine.received(.end(nil))
        #expect(machine.isAuthorizing)
        #expect(machine.authorized() == "proxy")
        let replay = machine.proxying("exchange")
        #expect(replay.count == 2)
        #expect(Self.name(machine.phase) == "proxying(exchange)")
        // The next request after this one starts clean.
        #expect(machine.answered(keepAlive: true))
        #expect(Self.name(machine.received(Self.head("/b"))) == "decide(/b)")
        machine.authorizing("proxy")
        #expect(machine.proxying("exchange").isEmpty)
    }

    @Test("a verdict that comes after the connection closed is dropped")
    func lateVerdict() {
        let machine = Self.machine(in: "authorizing")
        #expect(Self.name(machine.close()) == "authorizing(proxy)")
        #expect(!machine.isAuthorizing)
        #expect(machine.authorized() == nil)
    }

    @Test("pipelined requests are answered in order, after the one in flight")
    func pipelining() {
        let machine = Self.machine(in: "proxying")
        _ = machine.received(.end(nil))
        for part in [Self.head("/b"), .end(nil), Self.head("/c"), .end(nil)] {
            #expect(Self.name(machine.received(part)) == "none")
        }
        // Nothing goes while the first is in flight.
        #expect(machine.nextQueued() == nil)
        #expect(machine.answered(keepAlive: true))
        #expect(Self.name(machine.nextQueued()!) == "decide(/b)")
        machine.decided("200")
        #expect(Self.name(machine.nextQueued()!) == "perform(200)")
        // Answering /b (its answer was written) frees the way for /c.
        #expect(machine.answered(keepAlive: true))
        #expect(Self.name(machine.nextQueued()!) == "decide(/c)")
        _ = machine.proxying("second")
        #expect(Self.name(machine.nextQueued()!) == "end(second)")
        #expect(machine.nextQueued() == nil)
    }

    @Test("an answer that ends the connection drops what was queued")
    func closingDropsQueue() {
        let machine = Self.machine(in: "proxying")
        _ = machine.received(.end(nil))
        _ = machine.received(Self.head("/b"))
        #expect(!machine.answered(keepAlive: false))
        #expect(machine.nextQueued() == nil)
        #expect(Self.name(machine.phase) == "closed")
    }

    @Test("a drain closes an idle connection now and a busy one after its answer")
    func drain() {
        let idle = Self.machine(in: "idle")
        #expect(idle.quiesce())
        #expect(Self.name(idle.phase) == "closed")

        let busy = Self.machine(in: "proxying")
        #expect(!busy.quiesce())
        #expect(busy.quiescing)
        // The answer says Connection: close: keep-alive is refused while draining.
        #expect(!busy.answered(keepAlive: true))
        #expect(Self.name(busy.phase) == "closed")
    }

    @Test("a client half-close is answered first, then closes")
    func halfClose() {
        let idle = Self.machine(in: "idle")
        #expect(idle.inputClosed())
        #expect(idle.clientHalfClosed)

        let busy = Self.machine(in: "proxying")
        _ = busy.received(.end(nil))
        _ = busy.received(Self.head("/b"))
        _ = busy.received(.end(nil))
        #expect(!busy.inputClosed())
        #expect(busy.answered(keepAlive: true))
        // Still /b to answer.
        #expect(!busy.closeIfClientDone())
        _ = busy.nextQueued()
        busy.decided("200")
        _ = busy.nextQueued()
        #expect(busy.answered(keepAlive: true))
        #expect(busy.closeIfClientDone())
    }

    @Test("closing reports the work in flight, so it can be cancelled")
    func closeReportsWork() {
        for (phase, reported) in [("proxying", "proxying(exchange)"), ("upgrading", "upgrading(upgrade)"), ("idle", "idle")] {
            let machine = Self.machine(in: phase)
            #expect(Self.name(machine.close()) == reported)
            #expect(Self.name(machine.phase) == "closed")
        }
    }
}
