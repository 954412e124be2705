import NIOHTTP1

/// What a request head's fields say about its size, its `Host` and its body framing, read in
/// one pass over the fields — and the smuggling defences' verdict on that framing: only a
/// framing every backend reads the same way is forwarded (RFC 9112 §6.1, §6.3).
struct RequestFraming: Equatable {
    /// Fields in the head, and their bytes as sent (name, value, `: ` and CRLF).
    var fieldCount = 0
    var fieldBytes = 0
    /// Elements of all `Host` fields together: exactly one is valid in HTTP/1.1.
    var hostCount = 0
    /// `Authorization` and `Origin` fields: more than one of either is refused, since the
    /// gateway and a backend could each read a different one.
    var authorizationCount = 0
    var originCount = 0
    /// `Upgrade` fields: without one the request is no upgrade attempt, and nothing else need
    /// look for the field.
    var upgradeCount = 0
    /// `Expect` lists `100-continue`, which Sluice answers itself (it reads the body).
    var expectsContinue = false
    /// The body length `Content-Length` declares; nil without one (or if it is not a number,
    /// which the HTTP parser refuses before this is read).
    var contentLength: Int?
    /// A `Transfer-Encoding` field is present (without a `problem`: a lone `chunked`).
    var chunked = false
    /// Why the framing is refused; nil if it is sound.
    var problem: Problem?

    /// Framing that two parsers could read differently: refused with 400 and a close.
    enum Problem: Error, Equatable {
        case lengthAndTransferEncoding
        case conflictingLengths
        case unsupportedTransferEncoding

        var message: String {
            switch self {
            case .lengthAndTransferEncoding: "both Content-Length and Transfer-Encoding"
            case .conflictingLengths: "conflicting Content-Length values"
            case .unsupportedTransferEncoding: "Transfer-Encoding other than chunked"
            }
        }
    }

    /// The request has a body to forward.
    var hasBody: Bool { chunked || (contentLength ?? 0) > 0 }

    static func read(_ headers: HTTPHeaders) -> RequestFraming {
        var framing = RequestFraming()
        var length: Substring?
        var lengthsDiffer = false
        var codings = 0
        var onlyChunked = true
        for (name, value) in headers {
            framing.fieldCount += 1
            framing.fieldBytes += name.utf8.count + value.utf8.count + 4
            switch name.utf8.count {
            case 4 where HeaderTokens.equalIgnoringASCIICase(name, "host"):
                _ = HeaderTokens.firstElement(of: value) { _ in framing.hostCount += 1; return false }
            case 6 where HeaderTokens.equalIgnoringASCIICase(name, "origin"):
                framing.originCount += 1
            case 6 where HeaderTokens.equalIgnoringASCIICase(name, "expect"):
                framing.expectsContinue = framing.expectsContinue
                    || HeaderTokens.firstElement(of: value) { HeaderTokens.equalIgnoringASCIICase($0, "100-continue") }
            case 7 where HeaderTokens.equalIgnoringASCIICase(name, "upgrade"):
                framing.upgradeCount += 1
            case 13 where HeaderTokens.equalIgnoringASCIICase(name, "authorization"):
                framing.authorizationCount += 1
            case 14 where HeaderTokens.equalIgnoringASCIICase(name, "content-length"):
                _ = HeaderTokens.firstElement(of: value) { element in
                    if let first = length { lengthsDiffer = lengthsDiffer || first != element } else { length = element }
                    return false
                }
            case 17 where HeaderTokens.equalIgnoringASCIICase(name, "transfer-encoding"):
                framing.chunked = true
                _ = HeaderTokens.firstElement(of: value) { element in
                    codings += 1
                    onlyChunked = onlyChunked && HeaderTokens.equalIgnoringASCIICase(element, "chunked")
                    return false
                }
            default:
                break
            }
        }
        framing.contentLength = length.flatMap { Int($0) }
        if framing.chunked && length != nil {
            framing.problem = .lengthAndTransferEncoding
        } else if lengthsDiffer {
            framing.problem = .conflictingLengths
        } else if codings > 0 && (codings != 1 || !onlyChunked) {
            // Only a lone, final `chunked` is framing Sluice and every backend read the same way.
            framing.problem = .unsupportedTransferEncoding
        }
        return framing
    }
}
