import Foundation
import NIOSSL
import SluiceConfig

/// The checks that need more than the YAML: certificates parse and match their keys, backend TLS
/// contexts build. `sluice check` runs them without binding anything; `Gateway.start` runs the
/// same loaders.
public enum Preflight {
    public static func check(_ configuration: Configuration) async throws(ConfigErrors) {
        var errors: [ConfigError] = []
        for listener in configuration.listeners {
            guard let tls = listener.tls else { continue }
            for certificate in tls.certificates {
                let fm = FileManager.default
                if certificate.generateIfMissing && !fm.fileExists(atPath: certificate.certificateFile) && !fm.fileExists(atPath: certificate.keyFile) {
                    continue
                }
                do {
                    _ = try CertificateStore.load(certificate)
                } catch {
                    errors.append(error)
                }
            }
        }
        let placeholderPorts = Dictionary(uniqueKeysWithValues: BackendURL.Builtin.allCases.map { ($0, 1) })
        do {
            _ = try await Gateway.makeRoutes(configuration, builtinPorts: placeholderPorts)
        } catch {
            errors.append(error)
        }
        if !errors.isEmpty { throw ConfigErrors(errors) }
    }
}

/// The human-readable table `sluice check` prints.
public enum ConfigurationSummary {
    public static func render(_ configuration: Configuration) -> String {
        var lines: [String] = []
        lines.append("configuration OK: \(configuration.sourceFile ?? "(inline)")")
        lines.append("")
        lines.append("listeners:")
        for listener in configuration.listeners {
            var tls = "plain"
            if let config = listener.tls {
                tls = "tls ≥\(config.minimumVersion.rawValue), \(config.certificates.count) certificate(s)"
            }
            lines.append("  \(listener.name)  \(listener.address)  \(tls)")
        }
        if let admin = configuration.admin { lines.append("  (admin)  \(admin.address)") }
        if let cluster = configuration.cluster {
            lines.append("")
            lines.append("cluster: \(cluster.redis) as \(cluster.instanceID), on_store_failure \(cluster.onStoreFailure.rawValue), lease_ttl \(cluster.leaseTTL)")
        }
        lines.append("")
        lines.append("routes:")
        let rows = configuration.routes.map { route -> [String] in
            let target = route.builtin.map { "builtin \($0.rawValue)" } ?? route.backends.map(\.text).joined(separator: ", ")
            return [route.name, route.match.host ?? "*", route.match.pathPrefix, route.listeners.isEmpty ? "all" : route.listeners.joined(separator: ","), target]
        }
        let header = ["name", "host", "path_prefix", "listeners", "backends"]
        let widths = (0..<header.count).map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            lines.append("  " + row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        return lines.joined(separator: "\n")
    }
}
