import Foundation
import SluiceConfig

/// What an operator does to one backend through the admin listener: drain it (no new
/// connections; its live WebSockets get 1012 spread over a window, as in a shutdown), enable it
/// again, and see every backend's state.
extension Gateway {
    /// Why a backend command was refused, for the admin answer.
    struct BackendCommandError: Error {
        var status: Int
        var message: String
    }

    /// The backend set and index an operator names (`route`, then position, URL or `host:port`).
    func backend(route: String, named name: String) -> Result<(BackendSet, Int), BackendCommandError> {
        guard let routeEntry = currentRoutes.first(where: { $0.name == route }) else {
            return .failure(BackendCommandError(status: 404, message: "no route named '\(route)'"))
        }
        guard let set = routeEntry.backends else {
            return .failure(BackendCommandError(status: 404, message: "route '\(route)' has no backends"))
        }
        guard let index = set.index(named: name) else {
            let known = set.backends.map { "\($0.host):\($0.port)" }.joined(separator: ", ")
            return .failure(BackendCommandError(status: 404, message: "route '\(route)' has no backend '\(name)' (it has \(known))"))
        }
        return .success((set, index))
    }

    /// `POST /backends/{route}/{backend}/drain`: returns how many WebSockets get their 1012.
    func drainBackend(route: String, named name: String, window: Duration?) -> Result<Int, BackendCommandError> {
        switch backend(route: route, named: name) {
        case .failure(let error):
            return .failure(error)
        case .success(let (set, index)):
            set.drain(index)
            set.publishMetrics()
            let url = set.backend(index).url.text
            var settings = shutdownSettings
            settings.drainWindow = window ?? settings.drainWindow
            settings.deadline = max(settings.deadline, settings.drainWindow + .seconds(10))
            let matching: @Sendable (ConnectionInfo) -> Bool = { $0.route == route && $0.backend == url }
            let count = registry.ids(matching: matching).count
            logger.notice("backend draining", metadata: [
                "route": "\(route)", "backend": "\(url)", "websockets": "\(count)", "window": "\(settings.drainWindow)",
            ])
            let steps = drainSteps(listeners: [], code: CloseCode.serviceRestart, reason: "backend draining", matching: matching, announce: {})
            let procedure = DrainProcedure(settings, announced: false, clock: ContinuousClock())
            Task { _ = await procedure.run(steps) }
            return .success(count)
        }
    }

    /// `POST /backends/{route}/{backend}/enable`.
    func enableBackend(route: String, named name: String) -> Result<Void, BackendCommandError> {
        backend(route: route, named: name).map { set, index in
            set.enable(index)
            set.publishMetrics()
            logger.notice("backend enabled", metadata: ["route": "\(route)", "backend": "\(set.backend(index).url)"])
        }
    }

    /// `GET /backends`: every route's backends and how each stands.
    func backendsJSON() -> String {
        let routes = currentRoutes.compactMap { route in route.backends.map { (route, $0) } }
        let items = routes.map { route, set in
            let backends = set.view().enumerated().map { index, view in
                var fields = [
                    #""index":\#(index)"#, #""url":\#(ConnectionJSON.quoted(view.url))"#, #""state":"\#(view.state.rawValue)""#,
                    #""weight":\#(view.weight)"#, #""active":\#(view.active)"#, #""failures_in_a_row":\#(view.failuresInARow)"#,
                    #""ejections":\#(view.ejections)"#, #""ejected_for_seconds":\#(Self.number(view.ejectedForSeconds))"#,
                    #""share":\#(Self.number(view.share))"#, #""failures":\#(view.recent.count)"#,
                ]
                if let last = view.recent.last { fields.append(#""last_failure":\#(ConnectionJSON.quoted(last))"#) }
                if let at = view.recent.lastAt { fields.append(#""last_failure_at":\#(Self.number(at))"#) }
                return "{" + fields.joined(separator: ",") + "}"
            }
            let checks = set.health.map { health in
                #"{"mode":"\#(health.mode.rawValue)","path":\#(ConnectionJSON.quoted(health.path))}"#
            } ?? "null"
            return #"{"route":\#(ConnectionJSON.quoted(route.name)),"policy":"\#(set.balance.policy.rawValue)","checks":\#(checks),"backends":[\#(backends.joined(separator: ","))]}"#
        }
        return #"{"routes":[\#(items.joined(separator: ","))]}"#
    }

    private static func number(_ value: Double) -> String {
        String(format: "%.3f", value)
    }
}

extension Gateway {
    /// `GET /overview`: what the dashboard shows above the live figures — the configuration in
    /// force, the listeners with their bound addresses, the routes.
    func overviewJSON() -> String {
        let listeners = currentListeners.map { listener in
            let configuration = listener.configuration
            let versions = ConnectionJSON.strings(configuration.httpVersions.map(\.rawValue))
            return #"{"name":\#(ConnectionJSON.quoted(listener.name)),"address":\#(ConnectionJSON.quoted(listener.address)),"tls":\#(configuration.tls != nil),"versions":\#(versions),"open":\#(listener.openConnections)}"#
        }
        let routes = currentRoutes.map { route in
            let match = route.configuration.match
            return #"{"name":\#(ConnectionJSON.quoted(route.name)),"host":\#(match.host.map(ConnectionJSON.quoted) ?? "null"),"path_prefix":\#(ConnectionJSON.quoted(match.pathPrefix)),"backends":\#(route.backends?.backends.count ?? 0),"auth":\#(!route.configuration.auth.isPublic)}"#
        }
        return #"{"config_version":"\#(configurationVersion)","phase":"\#(phase)","websockets":\#(registry.count),"listeners":[\#(listeners.joined(separator: ","))],"routes":[\#(routes.joined(separator: ","))]}"#
    }
}
