/// Decoding of what keeps sick backends out of the balance: weighted backend entries, active
/// checks (`health:`) and the passive outlier settings under `balance:`.
extension Decoder {
    /// A backend entry: a URL, or `{url: …, weight: N}`.
    func decodeBackend(_ item: ConfigNode) throws(ConfigError) -> (BackendURL, Int) {
        var text: String
        var weight = 1
        if case .mapping = item.node {
            var map = try item.mapping()
            let url = try map.required("url")
            text = try url.string()
            if let value = map.optional("weight") { weight = try value.int(in: 1...100) }
            try map.finish()
            do throws(ValueError) {
                return (try BackendURL.parse(text), weight)
            } catch {
                throw url.error(error.message)
            }
        }
        text = try item.string()
        do throws(ValueError) {
            return (try BackendURL.parse(text), weight)
        } catch {
            throw item.error(error.message)
        }
    }

    func decodeHealthCheck(_ node: ConfigNode) throws(ConfigError) -> HealthCheckConfiguration {
        var map = try node.mapping()
        var health = HealthCheckConfiguration()
        if let value = map.optional("path") {
            health.path = try value.string()
            guard health.path.hasPrefix("/"), !health.path.contains(where: { $0 == " " || $0.isNewline }) else {
                throw value.error("a check path starts with '/' and has no spaces, got '\(health.path)'")
            }
        }
        if let value = map.optional("interval") { health.interval = try positive(value) }
        if let value = map.optional("timeout") { health.timeout = try positive(value) }
        if let value = map.optional("rise") { health.rise = try value.int(in: 1...100) }
        if let value = map.optional("fall") { health.fall = try value.int(in: 1...100) }
        if let value = map.optional("mode") {
            let text = try value.string()
            guard let mode = HealthCheckConfiguration.Mode(rawValue: text) else {
                throw value.error("mode is http or websocket, got '\(text)'")
            }
            health.mode = mode
        }
        if let value = map.optional("expect_status") {
            health.expectStatus = try value.sequence().map { (item) throws(ConfigError) in try Self.statusRange(item) }
            guard !health.expectStatus.isEmpty else { throw value.error("expect_status needs at least one status or range") }
        }
        guard health.timeout <= health.interval else {
            throw node.error("timeout (\(health.timeout)) must not be longer than interval (\(health.interval))")
        }
        try map.finish()
        return health
    }

    /// `200`, or `200-399`.
    static func statusRange(_ item: ConfigNode) throws(ConfigError) -> ClosedRange<Int> {
        let text = try item.string()
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard (1...2).contains(parts.count), let low = parts[0], let high = parts.count == 2 ? parts[1] : low,
            (100...599).contains(low), (100...599).contains(high), low <= high
        else {
            throw item.error("a status is a number (200) or a range (200-399) within 100-599, got '\(text)'")
        }
        return low...high
    }

    /// The passive-health and retry settings of `balance:`.
    func decodeOutlierSettings(_ map: inout MappingReader, into balance: inout BalancingConfiguration) throws(ConfigError) {
        if let value = map.optional("max_cool_down") { balance.maxCoolDown = try positive(value) }
        if let value = map.optional("max_ejection_percent") { balance.maxEjectionPercent = try value.int(in: 0...100) }
        if let value = map.optional("slow_start") { balance.slowStart = try value.duration() }
        if let value = map.optional("plain_errors_fail") { balance.plainErrorsFail = try value.bool() }
        if let value = map.optional("retry_requests") { balance.retryRequests = try value.bool() }
        if let value = map.optional("retry_budget") { balance.retryBudget = try positive(value) }
        if let value = map.optional("hash") {
            var hash = try value.mapping()
            var keys: [BalancingConfiguration.HashKey] = []
            if let header = hash.optional("header") {
                let name = try header.string()
                guard HTTPToken.isToken(name) else { throw header.error("'\(name)' is not a header name") }
                keys.append(.header(name.lowercased()))
            }
            if let cookie = hash.optional("cookie") {
                let name = try cookie.string()
                guard HTTPToken.isToken(name) else { throw cookie.error("'\(name)' is not a cookie name") }
                keys.append(.cookie(name))
            }
            if let user = hash.optional("user") {
                guard try user.bool() else { throw user.error("user: true hashes by the authenticated user; omit it otherwise") }
                keys.append(.user)
            }
            try hash.finish()
            guard keys.count == 1 else { throw value.error("hash takes exactly one of header, cookie or user") }
            guard balance.sticky == .none else { throw value.error("hash and sticky both pin clients: use one") }
            balance.hash = keys[0]
        }
        guard balance.coolDown <= balance.maxCoolDown else {
            throw map.node.error("max_cool_down (\(balance.maxCoolDown)) is shorter than cool_down (\(balance.coolDown))")
        }
    }
}
