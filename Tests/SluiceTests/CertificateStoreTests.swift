import Foundation
import SluiceConfig
import Testing
@testable import Sluice

/// SNI selection and certificate loading, with certificates generated at test time.
@Suite("Certificate store")
struct CertificateStoreTests {
    static func write(names: [String], in directory: String, as name: String) throws -> CertificateConfiguration {
        let (certificate, key) = try DevCertificate.generate(names: names)
        let certPath = "\(directory)/\(name).pem"
        let keyPath = "\(directory)/\(name)-key.pem"
        try certificate.write(toFile: certPath, atomically: true, encoding: .utf8)
        try key.write(toFile: keyPath, atomically: true, encoding: .utf8)
        return CertificateConfiguration(certificateFile: certPath, keyFile: keyPath, configPath: "listeners[0].tls.certificates[0]")
    }

    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "sluice-certs-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("SNI picks the certificate by name; exact beats wildcard; unknown and absent get the default")
    func selection() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let a = try Self.write(names: ["a.test"], in: directory, as: "a")
        let wildcard = try Self.write(names: ["*.b.test"], in: directory, as: "wild")
        let exact = try Self.write(names: ["x.b.test"], in: directory, as: "exact")
        let store = try CertificateStore(configuration: TLSListenerConfiguration(certificates: [a, wildcard, exact]))
        let fingerprints = store.entries.map(\.fingerprint)
        #expect(store.select(serverName: "a.test").fingerprint == fingerprints[0])
        #expect(store.select(serverName: "A.TEST").fingerprint == fingerprints[0])
        #expect(store.select(serverName: "y.b.test").fingerprint == fingerprints[1])
        #expect(store.select(serverName: "x.b.test").fingerprint == fingerprints[2])
        #expect(store.select(serverName: "b.test").fingerprint == fingerprints[0])
        #expect(store.select(serverName: "other.test").fingerprint == fingerprints[0])
        #expect(store.select(serverName: nil).fingerprint == fingerprints[0])
        #expect(store.entries[0].names.contains("127.0.0.1"))
    }

    @Test("a key that does not match its certificate is refused, naming the key")
    func mismatchedKey() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try Self.write(names: ["a.test"], in: directory, as: "a")
        let second = try Self.write(names: ["b.test"], in: directory, as: "b")
        let mixed = CertificateConfiguration(certificateFile: first.certificateFile, keyFile: second.keyFile, configPath: "listeners[0].tls.certificates[0]")
        #expect {
            _ = try CertificateStore(configuration: TLSListenerConfiguration(certificates: [mixed]))
        } throws: { error in
            let error = error as? ConfigError
            return error?.path == "listeners[0].tls.certificates[0].key" && error?.message.contains("does not match") == true
        }
    }

    @Test("a file that is not PEM is refused, naming the file")
    func notPEM() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = try Self.write(names: ["a.test"], in: directory, as: "a")
        try "not a certificate".write(toFile: good.certificateFile, atomically: true, encoding: .utf8)
        #expect {
            _ = try CertificateStore(configuration: TLSListenerConfiguration(certificates: [good]))
        } throws: { error in
            (error as? ConfigError)?.path == "listeners[0].tls.certificates[0].cert"
        }
    }

    @Test("the dev certificate is generated once, with its key private")
    func devCertificate() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = CertificateConfiguration(certificateFile: "\(directory)/dev.pem", keyFile: "\(directory)/sub/dev-key.pem")
        configuration.generateIfMissing = true
        #expect(try DevCertificate.generateIfMissing(configuration))
        #expect(try !DevCertificate.generateIfMissing(configuration))
        let attributes = try FileManager.default.attributesOfItem(atPath: configuration.keyFile)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let store = try CertificateStore(configuration: TLSListenerConfiguration(certificates: [configuration]))
        #expect(store.entries[0].names.contains("localhost"))
    }
}
