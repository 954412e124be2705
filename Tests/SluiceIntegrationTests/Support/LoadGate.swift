import Testing

/// Runs the suite's load tests one at a time.
///
/// Swift Testing starts every test at once. On a 2-core CI machine, the thousands of
/// connections, the GiB streams and the bursts of upgrades that a few tests make,
/// stacked on each other in the first minute, starve everything else beside them of CPU:
/// a Python client took longer to start than a test's 10 s bound, and a burst of 2,000
/// handshakes outlived the gateway's header timeout. Each load test is still a load test;
/// it only no longer shares the machine with another one. `@Test(.loadTest)` marks one.
struct LoadGate: TestTrait, TestScoping {
    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        await Turnstile.shared.enter()
        do {
            try await function()
        } catch {
            await Turnstile.shared.leave()
            throw error
        }
        await Turnstile.shared.leave()
    }
}

extension Trait where Self == LoadGate {
    /// A test that puts heavy load on the machine: it runs alone among such tests.
    static var loadTest: LoadGate { LoadGate() }
}

/// One holder at a time, the others waiting in arrival order.
private actor Turnstile {
    static let shared = Turnstile()
    private var held = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func enter() async {
        guard held else {
            held = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func leave() {
        if waiting.isEmpty {
            held = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}
