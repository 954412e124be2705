import Foundation

extension Decoder {
    /// The `cluster:` block.
    func decodeCluster(_ node: ConfigNode) throws(ConfigError) -> ClusterConfiguration {
        var map = try node.mapping()
        let urlNode = try map.required("redis")
        let address: RedisAddress
        switch RedisAddress.parse(try urlNode.string()) {
        case .success(let value): address = value
        case .failure(let invalid): throw urlNode.error(invalid.message)
        }
        var instance = ClusterConfiguration.defaultInstanceID()
        if let value = map.optional("instance_id") {
            instance = try value.string()
            guard !instance.isEmpty, instance.count <= 64, instance.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
                throw value.error("instance_id is 1 to 64 printable characters without spaces")
            }
        }
        var cluster = ClusterConfiguration(redis: address, instanceID: instance)
        if address.password != nil {
            throw urlNode.error("put the Redis password in password_file, not in the URL (it would show in logs and the config)")
        }
        if let value = map.optional("password_file") {
            cluster.passwordFile = try filePath(value)
            checkReadable(cluster.passwordFile!, path: "cluster.password_file")
        }
        if let value = map.optional("ca_file") {
            guard address.tls else { throw value.error("ca_file needs a rediss:// URL") }
            cluster.caFile = try filePath(value)
            checkReadable(cluster.caFile!, path: "cluster.ca_file")
        }
        if let value = map.optional("on_store_failure") {
            let text = try value.string()
            guard let policy = ClusterConfiguration.StoreFailurePolicy(rawValue: text) else {
                throw value.error("on_store_failure is 'allow' (the instance's own limits decide) or 'deny' (503), got '\(text)'")
            }
            cluster.onStoreFailure = policy
        }
        if let value = map.optional("lease_ttl") {
            cluster.leaseTTL = try value.duration()
            guard cluster.leaseTTL >= .seconds(3), cluster.leaseTTL <= .seconds(3600) else { throw value.error("lease_ttl is 3s to 1h") }
        }
        if let value = map.optional("timeout") {
            cluster.timeout = try value.duration()
            guard cluster.timeout >= .milliseconds(1), cluster.timeout <= .seconds(10) else { throw value.error("timeout is 1ms to 10s") }
        }
        if let value = map.optional("key_prefix") {
            cluster.keyPrefix = try value.string()
            guard !cluster.keyPrefix.isEmpty, cluster.keyPrefix.count <= 64 else { throw value.error("key_prefix is 1 to 64 characters") }
        }
        try map.finish()
        return cluster
    }
}

extension ClusterConfiguration {
    /// The host name and process id: unique on a machine, and recognisable in the cluster view.
    static func defaultInstanceID() -> String {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, 255) == 0 ? String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "sluice"
        return "\(host)-\(getpid())"
    }
}
