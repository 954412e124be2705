/// The two ends of a relayed connection: the client side is downstream, the backend upstream.
public enum RelaySide: String, Sendable, Hashable, CaseIterable {
    case downstream
    case upstream

    public var peer: RelaySide { self == .downstream ? .upstream : .downstream }

    /// 0 or 1, for per-side storage in arrays.
    var index: Int { self == .downstream ? 0 : 1 }
}

/// WebSocket close codes the gateway sends (RFC 6455 §7.4.1).
public enum CloseCode {
    public static let normal: UInt16 = 1000
    public static let goingAway: UInt16 = 1001
    public static let protocolError: UInt16 = 1002
    public static let policyViolation: UInt16 = 1008
    public static let messageTooBig: UInt16 = 1009
    public static let tryAgainLater: UInt16 = 1013
    public static let serviceRestart: UInt16 = 1012
    public static let badGateway: UInt16 = 1014

    /// A code an endpoint may send in a close frame (RFC 6455 §7.4): the defined ones that are
    /// not reserved for local use, and 3000–4999.
    static func isSendable(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }
}

/// A value per side, stored inline: a relay keeps several of these for as long as it lives, and
/// an array would be a heap allocation each.
struct PerSide<Value> {
    var downstream: Value
    var upstream: Value

    init(_ both: Value) {
        downstream = both
        upstream = both
    }

    subscript(side: RelaySide) -> Value {
        get { side == .downstream ? downstream : upstream }
        set {
            if side == .downstream { downstream = newValue } else { upstream = newValue }
        }
    }
}
