import NIOCore
import SluiceConfig
import Testing

@testable import Sluice

/// What the cluster store asks Redis and how it reads the answers, with no Redis: the admit
/// script's keys and arguments per route, its verdicts, and the instance's lease table.
@Suite("Cluster plan and lease table")
struct ClusterPlanTests {
    static func check(user: String? = "alice", _ configure: (inout RouteLimits) -> Void) -> ClusterStore.Check {
        var limits = RouteLimits()
        configure(&limits)
        return ClusterStore.Check(route: "chat", limits: limits, user: user, ip: IPAddress("192.0.2.7")!)
    }

    @Test("an upgrade counts against the route's and the user's caps and the address's and user's rates; a request against the request rates")
    func keys() {
        let check = Self.check {
            $0.maxWebSockets = 100
            $0.maxWebSocketsPerUser = 5
            $0.maxWebSocketsPerIP = 3
            $0.upgradeRatePerIP = RateLimit(perSecond: 2, burst: 4)
            $0.upgradeRatePerUser = RateLimit(perSecond: 1, burst: 1)
            $0.requestRatePerIP = RateLimit(perSecond: 10, burst: 10)
        }
        let upgrade = ClusterStore.Plan(check, prefix: "p", upgrade: true)
        #expect(upgrade.keys(prefix: "p", instance: "gw") == [
            "p:leases:gw", "p:instances", "p:ws:chat", "p:ws:chat:user:alice", "p:rate:chat:upgrade-ip:192.0.2.7", "p:rate:chat:upgrade-user:alice",
        ])
        #expect(upgrade.arguments(instance: "gw", lease: "gw/1", ttl: 30000, record: "{}") == [
            "gw", "gw/1", "30000", "2", "100", "5", "2", "500.0", "1500.0", "1000.0", "0.0", "{}",
        ])
        let request = ClusterStore.Plan(check, prefix: "p", upgrade: false)
        #expect(request.keys(prefix: "p", instance: "gw") == ["p:leases:gw", "p:instances", "p:rate:chat:request-ip:192.0.2.7"])
        #expect(request.limitsAnything)
        // No user: no per-user keys; nothing at all: nothing for Redis to decide.
        let anonymous = ClusterStore.Plan(Self.check(user: nil) { $0.maxWebSocketsPerUser = 5 }, prefix: "p", upgrade: true)
        #expect(!anonymous.limitsAnything)
    }

    @Test("the script's verdicts read as admitted, the cap or rate that refused, or Redis's failure")
    func verdicts() throws {
        let check = Self.check {
            $0.maxWebSockets = 100
            $0.maxWebSocketsPerUser = 5
            $0.upgradeRatePerIP = RateLimit(perSecond: 2, burst: 4)
            $0.retryAfter = .seconds(9)
        }
        let plan = ClusterStore.Plan(check, prefix: "p", upgrade: true)
        let limits = check.limits
        #expect(try plan.decision(.array([.integer(1)]), limits: limits) == nil)
        #expect(try plan.decision(.array([.integer(0), .integer(1), .integer(0)]), limits: limits) == .maxWebSockets(retryAfter: 9))
        #expect(try plan.decision(.array([.integer(0), .integer(2), .integer(0)]), limits: limits) == .maxWebSocketsPerUser(retryAfter: 9))
        #expect(try plan.decision(.array([.integer(0), .integer(3), .integer(2500)]), limits: limits) == .upgradeRatePerIP(retryAfter: 3))
        for bad: RESPValue in [.null, .integer(1), .array([]), .array([.integer(7)]), .array([.integer(0), .integer(4), .integer(0)]), .array([.integer(0)])] {
            #expect(throws: RedisError.self, "\(bad)") { _ = try plan.decision(bad, limits: limits) }
        }
    }

    @Test("the lease table: pending leases are kept only if Redis has them, held ones are restored, and a reconciliation overtaken by a new failure does not clear it")
    func table() {
        var table = ClusterLeaseTable()
        #expect(table.needsReconcile, "a new process reconciles first: a previous one may have used its instance id")
        let first = table.makeID(instance: "gw")
        let second = table.makeID(instance: "gw")
        #expect(first == "gw/1" && second == "gw/2")
        table.sent(first, record: "{1}")
        table.sent(second, record: "{2}")
        table.held(first, confirmedByRedis: true)
        let arguments = table.reconcileArguments()
        #expect(arguments.keep == ["gw/2"] && arguments.held.map(\.id) == ["gw/1"] && arguments.held.map(\.record) == ["{1}"])
        let generation = table.generation
        table.dropped(second, confirmedByRedis: false)  // a release Redis did not confirm, while the reconciliation was on its way
        table.reconciled(at: generation)
        #expect(table.needsReconcile)
        table.reconciled(at: table.generation)
        #expect(!table.needsReconcile && table.heldCount == 1)
        table.held(table.makeID(instance: "gw"), confirmedByRedis: false)
        #expect(table.heldCount == 1, "an id never sent is not held")
        #expect(table.needsReconcile)
    }
}
