import SluiceConfig

/// The configuration loader on arbitrary text: a configuration or errors naming a key path,
/// never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeRawBufferPointer(start: start, count: count), as: UTF8.self)
    do {
        _ = try ConfigurationLoader.parse(yaml: text, baseDirectory: "/nonexistent-sluice-fuzz")
    } catch {
        precondition(!error.description.isEmpty)
    }
    return 0
}
