import SluiceConfig

extension ClusterStore {
    /// Which of a route's limits the cluster enforces for one upgrade or request, as the keys
    /// and arguments of the `admit` script, and how its answer reads. Plain values, no I/O.
    ///
    /// Upgrades: the route's `max_websockets` and `max_websockets_per_user`, and the per-address
    /// and per-user upgrade rates. Requests: the per-address and per-user request rates.
    /// Per-address WebSocket caps and route-wide rates stay each instance's own.
    struct Plan: Equatable {
        struct Cap: Equatable {
            var key: String
            var limit: Int
            var perUser: Bool
        }

        struct Rate: Equatable {
            var key: String
            var rate: RateLimit
            var rejection: LimitRejection
        }

        var caps: [Cap] = []
        var rates: [Rate] = []

        init(_ check: Check, prefix: String, upgrade: Bool) {
            let limits = check.limits
            let ip = check.ip.description
            if upgrade {
                if let cap = limits.maxWebSockets { caps.append(Cap(key: Keys.routeCap(prefix, check.route), limit: cap, perUser: false)) }
                if let user = check.user, let cap = limits.maxWebSocketsPerUser {
                    caps.append(Cap(key: Keys.userCap(prefix, check.route, user), limit: cap, perUser: true))
                }
                if let rate = limits.upgradeRatePerIP {
                    rates.append(Rate(key: Keys.rate(prefix, check.route, "upgrade-ip", ip), rate: rate, rejection: .upgradeRatePerIP(retryAfter: 1)))
                }
                if let user = check.user, let rate = limits.upgradeRatePerUser {
                    rates.append(Rate(key: Keys.rate(prefix, check.route, "upgrade-user", user), rate: rate, rejection: .upgradeRatePerUser(retryAfter: 1)))
                }
            } else {
                if let rate = limits.requestRatePerIP {
                    rates.append(Rate(key: Keys.rate(prefix, check.route, "request-ip", ip), rate: rate, rejection: .requestRatePerIP(retryAfter: 1)))
                }
                if let user = check.user, let rate = limits.requestRatePerUser {
                    rates.append(Rate(key: Keys.rate(prefix, check.route, "request-user", user), rate: rate, rejection: .requestRatePerUser(retryAfter: 1)))
                }
            }
        }

        /// Something here is the cluster's to decide (else a Redis failure changes nothing).
        var limitsAnything: Bool { !caps.isEmpty || !rates.isEmpty }

        func keys(prefix: String, instance: String) -> [String] {
            [Keys.index(prefix, instance), Keys.instances(prefix)] + caps.map(\.key) + rates.map(\.key)
        }

        func arguments(instance: String, lease: String, ttl: Int64, record: String) -> [String] {
            var arguments = [instance, lease, String(ttl), String(caps.count)] + caps.map { String($0.limit) }
            arguments.append(String(rates.count))
            for rate in rates {
                let interval = 1000 / rate.rate.perSecond
                arguments += [String(interval), String(interval * Double(rate.rate.burst - 1))]
            }
            arguments.append(record)
            return arguments
        }

        /// The record Redis keeps for the lease: the keys it counts in, and what the cluster
        /// view shows.
        func record(id: String, instance: String, check: Check, summary: Summary) -> String {
            var fields = [
                #""k":\#(ConnectionJSON.strings(caps.map(\.key)))"#, #""lease":\#(ConnectionJSON.quoted(id))"#,
                #""instance":\#(ConnectionJSON.quoted(instance))"#, #""id":\#(summary.connectionID)"#,
                #""route":\#(ConnectionJSON.quoted(check.route))"#, #""listener":\#(ConnectionJSON.quoted(summary.listener))"#,
                #""client":\#(ConnectionJSON.quoted(summary.client))"#, #""started_at":\#(ConnectionJSON.seconds(WallClock.now()))"#,
            ]
            fields.append(#""user":\#(check.user.map(ConnectionJSON.quoted) ?? "null")"#)
            return "{" + fields.joined(separator: ",") + "}"
        }

        /// The script's answer: `nil` when admitted, else the limit that refused; an answer of
        /// another shape is Redis's failure, not a decision.
        func decision(_ answer: RESPValue, limits: RouteLimits) throws(RedisError) -> LimitRejection? {
            guard let items = answer.array, let verdict = items.first?.integer, verdict == 0 || verdict == 1 else {
                throw .protocolViolation("the admit script answered \(answer)")
            }
            if verdict == 1 { return nil }
            guard items.count >= 3, let index = items[1].integer, let retryMs = items[2].integer else {
                throw .protocolViolation("the admit script refused without saying why: \(answer)")
            }
            let position = Int(index) - 1
            let retry = Int(limits.retryAfter.components.seconds)
            if position < caps.count, position >= 0 {
                return caps[position].perUser ? .maxWebSocketsPerUser(retryAfter: retry) : .maxWebSockets(retryAfter: retry)
            }
            let ratePosition = position - caps.count
            guard ratePosition >= 0, ratePosition < rates.count else { throw .protocolViolation("the admit script named limit \(index) of \(caps.count + rates.count)") }
            let seconds = max(1, Int((Double(retryMs) / 1000).rounded(.up)))
            let rejection: LimitRejection = switch rates[ratePosition].rejection {
            case .upgradeRatePerIP: .upgradeRatePerIP(retryAfter: seconds)
            case .upgradeRatePerUser: .upgradeRatePerUser(retryAfter: seconds)
            case .requestRatePerIP: .requestRatePerIP(retryAfter: seconds)
            default: .requestRatePerUser(retryAfter: seconds)
            }
            return rejection
        }
    }
}
