import NIOCore
import RESP

/// The one error type of the client: what went wrong (`code`), the server's or the client's message,
/// and the node it happened on.
///
/// Server errors keep Redis's first word as the code (`ERR`, `WRONGTYPE`, `NOSCRIPT`, `MOVED`, `OOM`…)
/// and the whole error line as the message. Client-side failures have codes of their own
/// (`Code.timeout`, `.connectionClosed`, `.connectFailed`, `.protocolError`, `.unexpectedReply`,
/// `.poolExhausted`, `.crossSlot`, `.tooManyRedirects`).
public struct StrongboxError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// A command or connect attempt did not complete within its timeout.
        public static let timeout = Code("TIMEOUT")
        /// The connection closed (or was closed) with the request unanswered.
        public static let connectionClosed = Code("CONNECTION_CLOSED")
        /// No TCP connection could be made (refused, unreachable, name not resolved).
        public static let connectFailed = Code("CONNECT_FAILED")
        /// The server sent bytes that are not RESP, or a reply nobody asked for.
        public static let protocolError = Code("PROTOCOL")
        /// The reply had a type this command never returns.
        public static let unexpectedReply = Code("UNEXPECTED_REPLY")
        /// No pooled connection became free within the lease timeout.
        public static let poolExhausted = Code("POOL_EXHAUSTED")
        /// The client was shut down.
        public static let shutdown = Code("SHUTDOWN")
        /// The keys of one command live on different nodes and the command cannot be split.
        public static let crossSlot = Code("CROSSSLOT")
        /// `MOVED`/`ASK` redirections did not settle.
        public static let tooManyRedirects = Code("TOO_MANY_REDIRECTS")

        // Server codes clients commonly branch on.
        public static let err = Code("ERR")
        public static let wrongType = Code("WRONGTYPE")
        public static let noScript = Code("NOSCRIPT")
        public static let moved = Code("MOVED")
        public static let ask = Code("ASK")
        public static let tryAgain = Code("TRYAGAIN")
        public static let clusterDown = Code("CLUSTERDOWN")
        public static let busy = Code("BUSY")
        public static let oom = Code("OOM")
        public static let noAuth = Code("NOAUTH")
        public static let wrongPass = Code("WRONGPASS")
    }

    public let code: Code
    /// For server errors the full error line as the server sent it (without the leading `-`).
    public let message: String
    /// `host:port` of the node the error came from or concerns, when known.
    public let node: String?

    public init(code: Code, message: String, node: String? = nil) {
        self.code = code
        self.message = message
        self.node = node
    }

    /// An error reply from a server: the code is its first word.
    public init(serverMessage: String, node: String?) {
        let first = serverMessage.prefix { $0 != " " }
        self.init(code: Code(String(first)), message: serverMessage, node: node)
    }

    /// True for an error the server replied with (as opposed to one the client detected).
    public var isServerError: Bool {
        switch code {
        case .timeout, .connectionClosed, .connectFailed, .protocolError, .unexpectedReply, .poolExhausted,
             .shutdown, .crossSlot, .tooManyRedirects:
            return false
        default:
            return true
        }
    }

    func on(_ node: String) -> StrongboxError {
        self.node == nil ? StrongboxError(code: code, message: message, node: node) : self
    }

    public var description: String {
        let text = message.hasPrefix(code.rawValue) ? message : "\(code.rawValue): \(message)"
        return node.map { "\(text) (node \($0))" } ?? text
    }

    static func unexpected(_ value: RESPValue, _ expected: String) -> StrongboxError {
        StrongboxError(code: .unexpectedReply, message: "expected \(expected), got \(value)")
    }
}
