/// Things a configuration allows that are probably mistakes; `sluice check` prints them and the
/// gateway logs them at start. None stops the gateway.
public enum ConfigurationWarnings {
    public static func compute(_ configuration: Configuration) -> [String] {
        var warnings: [String] = []
        for (index, route) in configuration.routes.enumerated() where route.origin == nil && route.builtin == nil {
            // Browsers attach cookies and cached Basic credentials to cross-site WebSocket
            // upgrades; without an Origin check any site can open the socket as the user.
            let ambient = route.auth.methods.filter { method in
                switch method {
                case .basic, .forward: true
                case .jwt(let jwt): jwt.cookie != nil
                }
            }
            if let method = ambient.first {
                warnings.append("routes[\(index)] '\(route.name)': \(method.name) auth uses credentials browsers send on their own, and there is no origin policy: any site can open this WebSocket as the user (cross-site WebSocket hijacking); set origin.allowed")
            }
        }
        return warnings
    }
}
