import Crypto
import Foundation
import SwiftASN1
import X509

/// A throwaway CA and a server certificate it signs, for verified `wss://` backends in tests.
enum TestCertificateAuthority {
    /// Writes `ca.pem`, `server.pem` and `server-key.pem` for `serverName` into `directory`.
    static func write(serverName: String, in directory: String) throws {
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName("Sluice test CA") }
        let now = Date()
        let ca = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(86_400),
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(caKey)
        )
        let serverKey = P256.Signing.PrivateKey()
        let server = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(serverKey.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(86_400),
            issuer: caName, subject: try DistinguishedName { CommonName(serverName) }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([.dnsName(serverName)])
            },
            issuerPrivateKey: .init(caKey)
        )
        try ca.serializeAsPEM().pemString.write(toFile: "\(directory)/ca.pem", atomically: true, encoding: .utf8)
        try server.serializeAsPEM().pemString.write(toFile: "\(directory)/server.pem", atomically: true, encoding: .utf8)
        try serverKey.pemRepresentation.write(toFile: "\(directory)/server-key.pem", atomically: true, encoding: .utf8)
    }
}

/// A self-signed certificate that expired yesterday, for the reload's refusal of one.
enum ExpiredCertificate {
    static func write(serverName: String, certificate: String, key: String) throws {
        let privateKey = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(serverName) }
        let now = Date()
        let expired = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(privateKey.publicKey),
            notValidBefore: now.addingTimeInterval(-10 * 86_400), notValidAfter: now.addingTimeInterval(-86_400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions { SubjectAlternativeNames([.dnsName(serverName)]) },
            issuerPrivateKey: .init(privateKey)
        )
        try expired.serializeAsPEM().pemString.write(toFile: certificate, atomically: true, encoding: .utf8)
        try privateKey.pemRepresentation.write(toFile: key, atomically: true, encoding: .utf8)
    }
}
