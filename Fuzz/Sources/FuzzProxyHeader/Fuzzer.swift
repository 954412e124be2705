import SluiceConfig
@testable import Sluice

/// The PROXY protocol header reader, fed arbitrary bytes growing one piece at a time under each
/// accepted version: a header, `needMore` or a reason, never a crash; a header never claims
/// more bytes than it was given, and the answer for a prefix never contradicts the whole.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProxyHeader(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count >= 1 else { return 0 }
    let input = Array(UnsafeRawBufferPointer(start: start, count: count))
    let version: ProxyProtocolVersion = [.v1, .v2, .any][Int(input[0]) % 3]
    let bytes = Array(input.dropFirst())
    var settled: ProxyHeader.Outcome?
    for end in 0...bytes.count {
        let outcome = ProxyHeader.parse(bytes[..<end], accepting: version)
        switch outcome {
        case .needMore:
            precondition(settled == nil, "needMore after a verdict")
        case .header(_, let length):
            precondition(length <= end, "a header longer than its bytes")
            if let settled, case .header = settled {} else if settled != nil { preconditionFailure("a header after a refusal") }
            settled = settled ?? outcome
        case .invalid:
            if let settled, case .header = settled { preconditionFailure("a refusal after a header") }
            settled = settled ?? outcome
        }
    }
    return 0
}
