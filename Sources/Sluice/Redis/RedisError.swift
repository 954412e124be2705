/// Why a Redis call did not give an answer: the one error type of `Redis/`, naming what an
/// operator looks at (the server's own message, the address, the bound that ran out).
enum RedisError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No connection is open (never yet, or lost and waiting to reconnect).
    case unavailable(String)
    /// No answer within the call's timeout.
    case timeout(milliseconds: Int)
    /// The server answered with an error (`-ERR …`, `-NOSCRIPT …`, `-WRONGPASS …`).
    case server(String)
    /// The server's bytes were not valid RESP, or the answer had an unexpected shape.
    case protocolViolation(String)

    var description: String {
        switch self {
        case .unavailable(let why): "Redis unavailable: \(why)"
        case .timeout(let milliseconds): "Redis gave no answer within \(milliseconds) ms"
        case .server(let message): "Redis refused: \(message)"
        case .protocolViolation(let why): "Redis answer not understood: \(why)"
        }
    }

    /// The `reason` label of `sluice_cluster_store_errors_total`.
    var label: String {
        switch self {
        case .unavailable: "unavailable"
        case .timeout: "timeout"
        case .server: "server_error"
        case .protocolViolation: "protocol"
        }
    }
}
