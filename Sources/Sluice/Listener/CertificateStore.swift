import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOSSL
import SluiceConfig
import X509

/// The certificates of one TLS listener, chosen per handshake by SNI.
///
/// Names come from each certificate's subject alternative names (and common name when it has
/// none); exact names beat `*.` wildcards, and an unknown or absent name gets the default. The
/// table sits behind a lock so that certificates can be swapped while the listener runs.
public final class CertificateStore: Sendable {
    /// One loaded certificate chain with its key and the names it serves.
    public struct Entry: Sendable {
        public var chain: [NIOSSLCertificate]
        public var key: NIOSSLPrivateKey
        public var names: [String]
        /// SHA-256 of the leaf's DER, hex, for logs.
        public var fingerprint: String
    }

    private struct Table: Sendable {
        var entries: [Entry]
        var defaultIndex: Int
        var exact: [String: Int]
        var wildcard: [String: Int]
    }

    private let table: NIOLockedValueBox<Table>

    /// Loads every certificate of `configuration`; errors name the config key.
    public init(configuration: TLSListenerConfiguration) throws(ConfigError) {
        var entries: [Entry] = []
        for certificate in configuration.certificates {
            entries.append(try Self.load(certificate))
        }
        table = NIOLockedValueBox(Self.makeTable(entries, defaultIndex: configuration.defaultCertificateIndex))
    }

    public var entries: [Entry] { table.withLockedValue { $0.entries } }

    /// The entry for an SNI name (nil = no SNI).
    public func select(serverName: String?) -> Entry {
        table.withLockedValue { table in
            guard let name = serverName?.lowercased() else { return table.entries[table.defaultIndex] }
            if let index = table.exact[name] { return table.entries[index] }
            if let dot = name.firstIndex(of: "."), let index = table.wildcard[String(name[dot...])] {
                return table.entries[index]
            }
            return table.entries[table.defaultIndex]
        }
    }

    private static func makeTable(_ entries: [Entry], defaultIndex: Int) -> Table {
        var exact: [String: Int] = [:]
        var wildcard: [String: Int] = [:]
        for (index, entry) in entries.enumerated() {
            for name in entry.names {
                if name.hasPrefix("*.") {
                    if wildcard[String(name.dropFirst())] == nil { wildcard[String(name.dropFirst())] = index }
                } else if exact[name] == nil {
                    exact[name] = index
                }
            }
        }
        return Table(entries: entries, defaultIndex: min(defaultIndex, entries.count - 1), exact: exact, wildcard: wildcard)
    }

    /// Reads a PEM chain and key, checks that they belong together and that the leaf is valid
    /// now (not expired, not yet to come), and collects the names.
    static func load(_ configuration: CertificateConfiguration, now: Date = Date()) throws(ConfigError) -> Entry {
        let path = configuration.configPath
        func fail(_ key: String, _ message: String) -> ConfigError {
            ConfigError(path: path.isEmpty ? key : "\(path).\(key)", line: configuration.configLine, message: message)
        }
        let certificatePEM: String
        let keyPEM: String
        do {
            certificatePEM = try String(contentsOfFile: configuration.certificateFile, encoding: .utf8)
        } catch {
            throw fail("cert", "cannot read \(configuration.certificateFile)")
        }
        do {
            keyPEM = try String(contentsOfFile: configuration.keyFile, encoding: .utf8)
        } catch {
            throw fail("key", "cannot read \(configuration.keyFile)")
        }
        let chain: [NIOSSLCertificate]
        let leaf: Certificate
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8))
            guard let first = chain.first else { throw fail("cert", "\(configuration.certificateFile) holds no certificate") }
            leaf = try Certificate(derEncoded: try first.toDERBytes())
        } catch let error as ConfigError {
            throw error
        } catch {
            throw fail("cert", "\(configuration.certificateFile) is not a PEM certificate chain: \(error)")
        }
        let key: NIOSSLPrivateKey
        let parsedKey: Certificate.PrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
            parsedKey = try Certificate.PrivateKey(pemEncoded: keyPEM)
        } catch {
            throw fail("key", "\(configuration.keyFile) is not a PEM private key (RSA, ECDSA or Ed25519, unencrypted)")
        }
        guard parsedKey.publicKey == leaf.publicKey else {
            throw fail("key", "\(configuration.keyFile) does not match the certificate in \(configuration.certificateFile)")
        }
        if leaf.notValidAfter < now {
            throw fail("cert", "\(configuration.certificateFile) expired on \(ISO8601DateFormatter().string(from: leaf.notValidAfter))")
        }
        if leaf.notValidBefore > now {
            throw fail("cert", "\(configuration.certificateFile) is not valid before \(ISO8601DateFormatter().string(from: leaf.notValidBefore))")
        }
        var names: [String] = []
        if let alternativeNames = try? leaf.extensions.subjectAlternativeNames {
            for name in alternativeNames {
                switch name {
                case .dnsName(let dns): names.append(dns.lowercased())
                case .ipAddress(let octets): names.append(Self.ipText(Array(octets.bytes)))
                default: break
                }
            }
        }
        if names.isEmpty {
            for rdn in leaf.subject {
                for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                    names.append(String(describing: attribute.value).lowercased())
                }
            }
        }
        let der = (try? chain[0].toDERBytes()) ?? []
        let fingerprint = SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined(separator: ":")
        return Entry(chain: chain, key: key, names: names, fingerprint: fingerprint)
    }

    static func ipText(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        if bytes.count == 16 {
            var groups: [String] = []
            for index in stride(from: 0, to: 16, by: 2) {
                groups.append(String(UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]), radix: 16))
            }
            return groups.joined(separator: ":")
        }
        return ""
    }

    /// A server TLS configuration whose certificate is picked per ClientHello.
    /// - Parameter applicationProtocols: offered in ALPN, in order of preference.
    public func serverConfiguration(minimumVersion: TLSListenerConfiguration.MinimumVersion, applicationProtocols: [String] = ["http/1.1"]) -> TLSConfiguration {
        let fallback = select(serverName: nil)
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: fallback.chain.map { .certificate($0) },
            privateKey: .privateKey(fallback.key)
        )
        tls.minimumTLSVersion = minimumVersion == .tls13 ? .tlsv13 : .tlsv12
        tls.applicationProtocols = applicationProtocols
        tls.sslContextCallback = { [self] values, promise in
            let entry = select(serverName: values.serverHostname)
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = entry.chain.map { .certificate($0) }
            override.privateKey = .privateKey(entry.key)
            promise.succeed(override)
        }
        return tls
    }
}
