import NIOCore
import NIOHTTP1
import NIOPosix

/// Why a connection to a backend could not be made, and what the client is told when no
/// backend is left to try. Shared by WebSocket upgrades and plain HTTP requests.
enum BackendConnectFailure {
    case refused(String)
    case timeout

    init(_ error: any Error) {
        if let channelError = error as? ChannelError, case .connectTimeout = channelError {
            self = .timeout
        } else {
            self = .refused(Self.describe(error))
        }
    }

    /// The status, the short body and the metrics result label once every candidate failed
    /// (`nil`: none could be tried).
    static func answer(after last: BackendConnectFailure?) -> (status: HTTPResponseStatus, message: String, result: String) {
        switch last {
        case .timeout: (.gatewayTimeout, "backend connect timed out", "backend_timeout")
        case .refused(let reason): (.badGateway, "backend unreachable: \(reason)", "backend_refused")
        case nil: (.badGateway, "no backend available", "no_backend")
        }
    }

    /// An error in the words an operator reads in a 502 body or a log line.
    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return io.description }
        if let connect = error as? NIOConnectionError, let first = connect.connectionErrors.first {
            return describe(first.error)
        }
        return "\(error)"
    }
}
