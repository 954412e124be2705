import Testing
@testable import Sluice

/// The relay's close paths, without channels.
@Suite("Relay state machine")
struct RelayStateMachineTests {
    typealias Machine = WebSocketRelay.StateMachine

    static func close(_ code: UInt16, _ reason: String = "") -> RelayDirection.ControlFrame {
        let payload = [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8)
        return RelayDirection.ControlFrame(opcode: 8, payload: payload, wire: [0x88, UInt8(payload.count)] + payload)
    }

    @Test("a client-initiated close is forwarded both ways; the backend is disconnected first")
    func clientInitiated() {
        var machine = Machine()
        let clientClose = Self.close(1000, "bye")
        #expect(machine.controlFrame(clientClose, from: .downstream) == [.forward(clientClose, to: .upstream), .startCloseTimer])
        let backendClose = Self.close(1000)
        #expect(machine.controlFrame(backendClose, from: .upstream) == [
            .forward(backendClose, to: .downstream), .disconnect(.upstream), .disconnect(.downstream), .finished,
        ])
        #expect(machine.outcome == .init(initiator: .downstream, byGateway: false, code: 1000, reason: "bye"))
        #expect(machine.isFinished)
    }

    @Test("a backend-initiated close waits for the client's answer")
    func backendInitiated() {
        var machine = Machine()
        let backendClose = Self.close(4001, "backend bye")
        #expect(machine.controlFrame(backendClose, from: .upstream) == [.forward(backendClose, to: .downstream), .startCloseTimer])
        #expect(!machine.isFinished)
        let clientClose = Self.close(4001)
        let actions = machine.controlFrame(clientClose, from: .downstream)
        #expect(actions == [.forward(clientClose, to: .upstream), .disconnect(.upstream), .disconnect(.downstream), .finished])
    }

    @Test("a vanished backend gets the client a 1014; a vanished client gets the backend a 1001")
    func peerGone() {
        var machine = Machine()
        #expect(machine.peerGone(.upstream) == [
            .sendClose(code: 1014, reason: "backend went away", to: .downstream), .startCloseTimer,
        ])
        let answer = Self.close(1014)
        #expect(machine.controlFrame(answer, from: .downstream) == [.disconnect(.downstream), .finished])

        var other = Machine()
        #expect(other.peerGone(.downstream) == [.sendClose(code: 1001, reason: "", to: .upstream), .startCloseTimer])
        #expect(other.peerGone(.upstream) == [.finished])
    }

    @Test("a violation fails the sender with its code and closes the other side with 1001")
    func violation() {
        var machine = Machine()
        #expect(machine.violation(code: 1002, reason: "bad", from: .downstream) == [
            .sendCloseAndDisconnect(code: 1002, reason: "bad", to: .downstream),
            .sendClose(code: 1001, reason: "", to: .upstream), .startCloseTimer,
        ])
        #expect(machine.controlFrame(Self.close(1001), from: .upstream) == [.disconnect(.upstream)])
        #expect(machine.peerGone(.downstream) == [.finished])
    }

    @Test("idle, kick and shutdown close both sides and consume the answers")
    func closeBoth() {
        var machine = Machine()
        #expect(machine.closeBoth(downstreamCode: 1008, upstreamCode: 1001, reason: "kicked") == [
            .sendClose(code: 1001, reason: "kicked", to: .upstream), .sendClose(code: 1008, reason: "kicked", to: .downstream), .startCloseTimer,
        ])
        #expect(machine.controlFrame(Self.close(1008), from: .downstream) == [.disconnect(.downstream)])
        #expect(machine.controlFrame(Self.close(1001), from: .upstream) == [.disconnect(.upstream), .finished])
    }

    @Test("the close timeout drops whoever is still connected")
    func closeTimeout() {
        var machine = Machine()
        _ = machine.closeBoth(downstreamCode: 1001, upstreamCode: 1001, reason: "idle timeout")
        #expect(machine.closeTimedOut() == [.disconnect(.upstream), .disconnect(.downstream)])
        #expect(machine.closeTimedOut() == [])
    }

    @Test("the gateway's pongs are consumed; the peers' pings and pongs pass through")
    func pings() {
        var machine = Machine()
        let actions = machine.pingTick()
        guard case .sendPing(let payload, to: .upstream) = actions.first else {
            Issue.record("no ping: \(actions)")
            return
        }
        let ourPong = RelayDirection.ControlFrame(opcode: 10, payload: payload, wire: [])
        #expect(machine.controlFrame(ourPong, from: .upstream) == [])
        #expect(machine.controlFrame(ourPong, from: .upstream) == [.forward(ourPong, to: .downstream)])
        let ping = RelayDirection.ControlFrame(opcode: 9, payload: [1], wire: [0x89, 1, 1])
        #expect(machine.controlFrame(ping, from: .downstream) == [.forward(ping, to: .upstream)])
    }

    @Test("a silent backend is closed and dropped; the client hears 1014")
    func silent() {
        var machine = Machine()
        #expect(machine.peerSilent(.upstream) == [
            .sendCloseAndDisconnect(code: 1001, reason: "no answer to ping", to: .upstream),
            .sendClose(code: 1014, reason: "backend not responding", to: .downstream), .startCloseTimer,
        ])
        #expect(machine.peerSilent(.upstream) == [])
    }

    @Test("after a close went to a side, nothing more is forwarded to it")
    func nothingAfterClose() {
        var machine = Machine()
        _ = machine.controlFrame(Self.close(1000), from: .downstream)
        let ping = RelayDirection.ControlFrame(opcode: 9, payload: [], wire: [0x89, 0])
        #expect(machine.controlFrame(ping, from: .downstream) == [])
    }
}
