import Foundation
import Testing
@testable import SluiceConfig

/// `http.versions` and the `http2:` block of a listener.
@Suite("HTTP versions configuration")
struct HTTPVersionsConfigurationTests {
    func parse(_ listener: String) throws(ConfigErrors) -> Configuration {
        try ConfigurationLoader.parse(yaml: """
            listeners:
              - name: public
                address: 127.0.0.1:8080
                \(listener)
            routes:
              - name: echo
                match: { path_prefix: /ws }
                backends: ["ws://127.0.0.1:9001"]
            """, baseDirectory: NSTemporaryDirectory())
    }

    func firstError(_ listener: String) -> String? {
        do {
            _ = try parse(listener)
            return nil
        } catch {
            return error.errors.first.map { "\($0.path): \($0.message)" }
        }
    }

    @Test("plain listeners serve HTTP/1.1 unless they list h2 (h2c); versions and HTTP/2 limits decode")
    func decode() throws {
        #expect(try parse("").listeners[0].httpVersions == [.http1])
        let listener = try parse("""
            http: { versions: [http/1.1, h2] }
                http2: { max_concurrent_streams: 50, max_header_list_size: 8KiB, initial_window_size: 1MiB, connection_window_size: 4MiB, max_frame_size: 32KiB, max_resets: 20, reset_window: 10s, max_continuation_frames: 3, max_control_frames: 100, control_frame_window: 5s, idle_timeout: 30s, engine: wire }
            """).listeners[0]
        #expect(listener.httpVersions == [.http1, .h2])
        let limits = listener.http2
        #expect(limits.maxConcurrentStreams == 50 && limits.maxHeaderListSize == 8192 && limits.initialWindowSize == 1 << 20)
        #expect(limits.connectionWindowSize == 4 << 20 && limits.maxFrameSize == 32768 && limits.maxResets == 20)
        #expect(limits.resetWindow == .seconds(10) && limits.maxContinuationFrames == 3 && limits.maxControlFrames == 100)
        #expect(limits.controlFrameWindow == .seconds(5) && limits.idleTimeout == .seconds(30) && limits.engine == .wire)
        #expect(HTTP2Limits().maxConcurrentStreams == 100 && HTTP2Limits().idleTimeout == .seconds(120) && HTTP2Limits().engine == .wire)
    }

    @Test("TLS listeners offer h2 then http/1.1 by default")
    func tlsDefault() {
        var listener = ListenerConfiguration(name: "tls", address: SocketAddressSpec(host: "127.0.0.1", port: 0))
        listener.tls = TLSListenerConfiguration(certificates: [CertificateConfiguration(certificateFile: "/c", keyFile: "/k")])
        #expect(listener.httpVersions == [.h2, .http1])
        listener.http.versions = [.http1]
        #expect(listener.httpVersions == [.http1])
    }

    @Test("bad versions and HTTP/2 limits are errors naming the key")
    func errors() {
        #expect(firstError("http: { versions: [] }")?.contains("listeners[0].http.versions") == true)
        #expect(firstError("http: { versions: [h3] }")?.contains("unknown HTTP version 'h3'") == true)
        #expect(firstError("http: { versions: [h2, h2] }")?.contains("listed twice") == true)
        #expect(firstError("http2: { max_concurrent_streams: 0 }")?.contains("listeners[0].http2.max_concurrent_streams") == true)
        #expect(firstError("http2: { max_frame_size: 1KiB }")?.contains("listeners[0].http2.max_frame_size") == true)
        #expect(firstError("http2: { idle_timeout: 0s }")?.contains("listeners[0].http2.idle_timeout") == true)
        #expect(firstError("http2: { max_streams: 5 }")?.contains("max_streams") == true)
        #expect(firstError("http2: { engine: h3 }")?.contains("listeners[0].http2.engine: http2 engine is nio or wire, got 'h3'") == true)
    }
}
