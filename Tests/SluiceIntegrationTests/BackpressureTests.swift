import Foundation
import Testing

/// Memory stays bounded when a client stops reading, measured on a separate `sluice` process.
@Suite("Backpressure")
struct BackpressureTests {
    @Test("a client that stops reading while the backend sends 1 GiB leaves the gateway's memory bounded", .loadTest)
    func stalledClient() async throws {
        let backend = try await PythonPeer(["backend", "flood", "\(1 << 30)"])
        let sluice = try SluiceProcess(yaml: """
            listeners:
              - name: plain
                address: 127.0.0.1:0
            routes:
              - name: ws
                match: { path_prefix: /ws }
                backends: ["ws://127.0.0.1:\(backend.port)"]
                websocket: { buffer_size: 64KiB, idle_timeout: off }
            """)
        let before = sluice.residentBytes
        var peak = before
        let client = Task { () -> (status: Int?, stalled: Bool?) in
            let result = try await PythonPeer.run(["raw-client", "stall", "127.0.0.1", "\(sluice.port)", #"{"path": "/ws", "seconds": 6}"#], timeout: 30)
            return (result["status"] as? Int, result["stalled"] as? Bool)
        }
        for _ in 0..<25 {
            try await Task.sleep(for: .milliseconds(200))
            peak = max(peak, sluice.residentBytes)
        }
        let result = try await client.value
        sluice.stop()
        backend.stop()
        #expect(result.status == 101)
        #expect(result.stalled == true)
        #expect(before > 0)
        #expect(peak - before < 64 << 20, "RSS grew from \(before >> 20) MiB to \(peak >> 20) MiB")
    }
}
