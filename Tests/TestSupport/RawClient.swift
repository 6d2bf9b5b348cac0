import Foundation
import NIOCore
import RESP

/// A blocking TCP client for tests: writes raw bytes, reads whole replies with a timeout.
public final class RawClient {
    private let fd: Int32
    private var pending = ByteBuffer()
    private let decoder = RESPValueDecoder()
    public private(set) var closedByPeer = false

    public init(port: Int, host: String = "127.0.0.1", timeoutSeconds: Int = 10) throws {
        // Work on a local descriptor: `self.fd` is set only once connected, so a failed init
        // never leaves a descriptor number for deinit to close a second time (by then it may
        // belong to someone else, such as a socket the in-process server just accepted).
        let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socketFD >= 0 else { throw TestError("socket failed") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr(host)
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socketFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            Glibc.close(socketFD)
            throw TestError("connect to \(port) failed")
        }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(socketFD, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socketFD, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(socketFD, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        fd = socketFD
    }

    deinit { Glibc.close(fd) }

    public func close() { shutdown(fd, Int32(SHUT_RDWR)) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestError("send failed (errno \(errno))") }
            offset += n
        }
    }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Sends one command as a RESP multibulk.
    public func send(command args: [String]) throws {
        try send(Self.encode(args.map { Array($0.utf8) }))
    }

    public static func encode(_ args: [[UInt8]]) -> [UInt8] {
        var out = Array("*\(args.count)\r\n".utf8)
        for a in args {
            out += Array("$\(a.count)\r\n".utf8)
            out += a
            out += [13, 10]
        }
        return out
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)) {
            closedByPeer = true
            throw TestError("connection closed by server")
        }
        if n < 0 { throw TestError("read failed or timed out (errno \(errno))") }
        pending.writeBytes(chunk[0..<n])
    }

    /// Reads exactly `count` raw bytes (any already buffered first) and returns the first
    /// `keep` of them and the last `keep`: for replies too large to hold in a test.
    public func readRaw(count: Int, keep: Int = 64) throws -> (head: [UInt8], tail: [UInt8]) {
        var head: [UInt8] = [], tail: [UInt8] = []
        var remaining = count
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        func take(_ bytes: ArraySlice<UInt8>) {
            if head.count < keep { head += bytes.prefix(keep - head.count) }
            tail = Array((tail + bytes.suffix(keep)).suffix(keep))
        }
        if pending.readableBytes > 0 {
            let n = min(remaining, pending.readableBytes)
            take(ArraySlice(pending.readBytes(length: n)!))
            remaining -= n
        }
        while remaining > 0 {
            let want = min(remaining, chunk.count)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, want, 0) }
            if n <= 0 { throw TestError("read failed after \(count - remaining) of \(count) bytes (errno \(errno))") }
            take(chunk[0..<n])
            remaining -= n
        }
        return (head, tail)
    }

    /// The next reply and its exact bytes.
    public func readReplyBytes() throws -> (RESPValue, [UInt8]) {
        while true {
            if let (value, bytes) = try decoder.nextWithBytes(from: &pending) {
                return (value, Array(bytes.readableBytesView))
            }
            try fill()
        }
    }

    public func readReply() throws -> RESPValue { try readReplyBytes().0 }

    /// Sends a command and returns its reply.
    @discardableResult
    public func call(_ args: String...) throws -> RESPValue {
        try send(command: args)
        return try readReply()
    }

    /// Sends a command and returns its reply's exact bytes as text.
    public func callRaw(_ args: String...) throws -> String {
        try send(command: args)
        return String(decoding: try readReplyBytes().1, as: UTF8.self)
    }

    /// Reads until the server closes the connection. - Returns: every byte received before that.
    public func readUntilClosed() throws -> [UInt8] {
        while true {
            do { try fill() } catch {
                if closedByPeer { return Array(pending.readableBytesView) }
                throw error
            }
        }
    }
}
