import Crypto
import Foundation
import SluiceConfig
import SwiftASN1
import X509

/// The self-signed development certificate Sluice makes at first start when a listener asks for
/// one (`generate_if_missing: true`), so the default config runs on a fresh machine with TLS.
///
/// Valid for `localhost`, `127.0.0.1` and `::1`; the key file is written with mode 0600.
public enum DevCertificate {
    /// Generates the files of `configuration` when both are missing; returns true when it did.
    public static func generateIfMissing(_ configuration: CertificateConfiguration) throws(ConfigError) -> Bool {
        let fm = FileManager.default
        guard configuration.generateIfMissing,
            !fm.fileExists(atPath: configuration.certificateFile), !fm.fileExists(atPath: configuration.keyFile)
        else { return false }
        do {
            let (certificatePEM, keyPEM) = try generate()
            let directory = (configuration.certificateFile as NSString).deletingLastPathComponent
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let keyDirectory = (configuration.keyFile as NSString).deletingLastPathComponent
            try fm.createDirectory(atPath: keyDirectory, withIntermediateDirectories: true)
            guard fm.createFile(atPath: configuration.keyFile, contents: Data(keyPEM.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw ConfigError(path: "\(configuration.configPath).key", message: "cannot write \(configuration.keyFile)")
            }
            try Data(certificatePEM.utf8).write(to: URL(fileURLWithPath: configuration.certificateFile))
            return true
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError(path: configuration.configPath, message: "cannot generate the development certificate: \(error)")
        }
    }

    /// A fresh P-256 key and a self-signed certificate for local names, both as PEM.
    public static func generate(names: [String] = ["localhost"], validFor days: Int = 825) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName("Sluice development")
            CommonName("localhost")
        }
        let now = Date()
        var alternativeNames: [GeneralName] = names.map { .dnsName($0) }
        alternativeNames.append(.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])))
        alternativeNames.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))))
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(Double(days) * 86_400),
            issuer: subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(alternativeNames)
            },
            issuerPrivateKey: .init(key)
        )
        return (try certificate.serializeAsPEM().pemString, key.pemRepresentation)
    }
}
