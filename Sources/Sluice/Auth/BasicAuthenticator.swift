import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfig

/// HTTP Basic against an htpasswd file. Hashes are checked on a thread pool (bcrypt costs tens
/// of milliseconds by design); successful checks are remembered for `cache_ttl`, keyed by a
/// digest of the credentials, so a reconnect storm does not burn the CPU.
final class BasicAuthenticator: Sendable {
    let configuration: BasicAuthConfiguration
    private let threadPool: NIOThreadPool
    private let cache = NIOLockedValueBox<[[UInt8]: NIODeadline]>([:])
    /// Checked for unknown users too, so the time taken does not reveal which users exist.
    private let decoyHash: String

    init(configuration: BasicAuthConfiguration, threadPool: NIOThreadPool) {
        self.configuration = configuration
        self.threadPool = threadPool
        decoyHash = configuration.users.values.first ?? "$2b$12$abcdefghijklmnopqrstuu5Jp4gQ4k0oX8K8p0YqX4qkxWl9nq7W2"
    }

    var challenge: String { "Basic realm=\"\(configuration.realm)\", charset=\"UTF-8\"" }

    func authenticate(_ headers: HTTPHeaders, userHeader: String, on eventLoop: any EventLoop) -> EventLoopFuture<AuthOutcome> {
        guard let credentials = Self.credentials(headers) else {
            return eventLoop.makeSucceededFuture(headers.contains(name: "authorization") && Self.isBasic(headers) ? .invalid(reason: "malformed Basic credentials") : .missing)
        }
        let (user, password) = credentials
        let hash = configuration.users[user]
        let key = PasswordHasher.digest(user, password, hash ?? "")
        let admitted = admit(user, userHeader: userHeader)
        let now = NIODeadline.now()
        if hash != nil, cache.withLockedValue({ $0[key].map { $0 > now } ?? false }) {
            return eventLoop.makeSucceededFuture(admitted)
        }
        let decoy = decoyHash
        let ttl = configuration.cacheTTL
        return threadPool.runIfActive(eventLoop: eventLoop) {
            PasswordHasher.verify(password: password, hash: hash ?? decoy) && hash != nil
        }.map { [cache] valid in
            guard valid else { return .invalid(reason: "wrong user or password") }
            if ttl > .zero {
                cache.withLockedValue { cache in
                    if cache.count > 10_000 { cache = cache.filter { $0.value > now } }
                    cache[key] = NIODeadline.now() + TimeAmount(ttl)
                }
            }
            return admitted
        }.recover { _ in .unavailable(reason: "password check failed to run") }
    }

    private func admit(_ user: String, userHeader: String) -> AuthOutcome {
        if let allowed = configuration.allowedUsers, !allowed.contains(user) {
            return .forbidden(reason: "user not allowed on this route")
        }
        return .admitted(Identity(user: user, headers: [(userHeader, user)], expiresAt: nil, method: "basic", credential: .authorization))
    }

    private static func isBasic(_ headers: HTTPHeaders) -> Bool {
        headers.first(name: "authorization")?.lowercased().hasPrefix("basic ") == true
    }

    /// `user` and `password` from `Authorization: Basic …`, or `nil`. Credentials holding a
    /// control character (a NUL that C code would stop at, say) are refused whole.
    static func credentials(_ headers: HTTPHeaders) -> (String, String)? {
        guard let value = headers.first(name: "authorization") else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic", parts[1].utf8.count <= 4096,
            let data = Data(base64Encoded: parts[1].trimmingSpacesAndTabs()),
            !data.contains(where: { $0 < 0x20 || $0 == 0x7F }),
            let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }
}
