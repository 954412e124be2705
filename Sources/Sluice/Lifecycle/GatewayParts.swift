import Logging
import ServiceLifecycle
import SluiceConfig
import UnixSignals

/// The gateway's long-running parts as services of one `ServiceGroup`. The group shuts them
/// down one after another in reverse order, so the order of `Gateway.parts(...)` is the order
/// of a shutdown read backwards: the reloader stops first, then the listeners drain (while
/// `/readyz` still answers 503 on the admin listener and relays to the built-in backends end),
/// then the admin listener, then the built-in backends.
extension Gateway {
    /// The parts, in the order the service group is given them. `start()` must have run.
    public func parts(signals: UnixSignalsSequence) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        [
            .init(service: BuiltinBackendsService(gateway: self)),
            .init(service: AdminService(gateway: self)),
            .init(service: ListenersService(gateway: self)),
            .init(service: ReloadService(gateway: self, signals: signals)),
        ]
    }
}

/// The built-in backends (the echo behind the demo): stopped last.
struct BuiltinBackendsService: Service {
    let gateway: Gateway

    func run() async throws {
        try? await gracefulShutdown()
        await gateway.stopBuiltins()
    }
}

/// The admin listener: it answers (`/readyz` 503 included) until the drain is over.
struct AdminService: Service {
    let gateway: Gateway

    func run() async throws {
        try? await gracefulShutdown()
        await gateway.stopAdmin()
    }
}

/// The listeners and their connections: on graceful shutdown (SIGTERM, SIGINT, `POST /drain`),
/// the drain.
struct ListenersService: Service {
    let gateway: Gateway

    func run() async throws {
        try? await gracefulShutdown()
        await gateway.drain(stoppingParts: false)
    }
}

/// The signals and the file watch: SIGHUP reloads, as does (with `reload.watch`) a change of
/// the configuration file or a file it names; SIGUSR1 reopens the access log (logrotate);
/// SIGTERM and SIGINT start the drain. `POST /reload` goes straight to the gateway; reloads run
/// one at a time whatever asked for them.
struct ReloadService: Service {
    let gateway: Gateway
    let signals: UnixSignalsSequence

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { tasks in
                tasks.addTask { await handleSignals() }
                tasks.addTask { await watchFiles() }
                await tasks.next()
                tasks.cancelAll()
            }
        }
    }

    private func handleSignals() async {
        for await signal in signals {
            switch signal {
            case .sighup:
                gateway.logger.notice("SIGHUP: reloading the configuration")
                _ = await gateway.reloadFromFile()
            case .sigterm, .sigint:
                gateway.logger.notice("\(signal): shutting down")
                gateway.requestShutdown()
            case .sigusr1:
                do {
                    try gateway.services.accessLog.reopen()
                    gateway.logger.notice("SIGUSR1: access log reopened")
                } catch {
                    gateway.logger.error("SIGUSR1: cannot reopen the access log", metadata: ["error": "\(error)"])
                }
            default:
                break
            }
        }
    }

    /// Polls the files while `reload.watch` is on, from how they were when the configuration in
    /// force was read (again after each reload, whatever triggered it).
    private func watchFiles() async {
        var watcher = gateway.fileWatcher()
        var version = gateway.configurationVersion
        while !Task.isCancelled {
            let configuration = gateway.configuration
            do {
                try await Task.sleep(for: configuration.reload.watchInterval)
            } catch {
                return
            }
            if gateway.configurationVersion != version {
                version = gateway.configurationVersion
                watcher = gateway.fileWatcher()
            }
            guard configuration.reload.watch, watcher.poll() else { continue }
            gateway.logger.notice("a watched file changed: reloading the configuration")
            _ = await gateway.reloadFromFile()
            version = gateway.configurationVersion
            watcher = gateway.fileWatcher()
        }
    }
}
