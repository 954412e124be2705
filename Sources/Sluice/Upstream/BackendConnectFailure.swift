import NIOCore
import NIOHTTP1
import NIOPosix

/// Why a connection to a backend could not be made (`SluiceError.connectFailed` says what the
/// client is told once no backend is left). Shared by WebSocket upgrades and plain requests.
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

    /// An error in the words an operator reads in a 502 body or a log line.
    static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return io.description }
        if let connect = error as? NIOConnectionError, let first = connect.connectionErrors.first {
            return describe(first.error)
        }
        return "\(error)"
    }
}
