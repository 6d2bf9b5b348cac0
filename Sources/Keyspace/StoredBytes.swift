import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A value as the keyspace stores it: up to 24 bytes inline in the entry, longer ones in a single
/// heap allocation holding the bytes directly.
///
/// A lock token or a counter costs no allocation at all, and a 64-byte cache value one (a
/// `ByteBuffer` of its own costs two: its storage object and its bytes). The bytes never alias a
/// network buffer.
public struct StoredBytes: Sendable, Equatable {
    @usableFromInline
    enum Representation: Sendable {
        case inline(UInt64, UInt64, UInt64, count: UInt8)
        case heap(HeapReference)
    }

    /// `ManagedBuffer` subclasses cannot be `Sendable`; the bytes are immutable once made, so
    /// sharing the reference across threads is safe.
    @usableFromInline
    struct HeapReference: @unchecked Sendable {
        @usableFromInline let storage: HeapBytes
        @inlinable init(_ storage: HeapBytes) { self.storage = storage }
    }

    @usableFromInline var representation: Representation

    /// Bytes kept inline, without an allocation.
    public static let inlineCapacity = 24

    /// Copies `bytes`.
    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count <= Self.inlineCapacity {
            var words: (UInt64, UInt64, UInt64) = (0, 0, 0)
            if bytes.count > 0 {
                Swift.withUnsafeMutableBytes(of: &words) { $0.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            }
            representation = .inline(words.0, words.1, words.2, count: UInt8(bytes.count))
        } else {
            representation = .heap(HeapReference(HeapBytes.make(bytes)))
        }
    }

    /// Copies the readable bytes of `buffer`.
    @inlinable
    public init(_ buffer: ByteBuffer) {
        self = buffer.withUnsafeReadableBytes { StoredBytes($0) }
    }

    /// The UTF-8 bytes of `string`.
    public init(string: String) {
        var s = string
        self = s.withUTF8 { StoredBytes(UnsafeRawBufferPointer($0)) }
    }

    @inlinable
    public var count: Int {
        switch representation {
        case .inline(_, _, _, let n): return Int(n)
        case .heap(let h): return h.storage.header
        }
    }

    /// Calls `body` with the bytes; the pointer is valid only inside `body`.
    @inlinable
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        switch representation {
        case .inline(let a, let b, let c, let n):
            var words = (a, b, c)
            return try Swift.withUnsafeBytes(of: &words) { (raw: UnsafeRawBufferPointer) throws(E) -> R in
                try body(UnsafeRawBufferPointer(rebasing: raw[0..<Int(n)]))
            }
        case .heap(let h):
            return try h.storage.withUnsafeMutablePointers { (count: UnsafeMutablePointer<Int>, bytes: UnsafeMutablePointer<UInt8>) throws(E) -> R in
                try body(UnsafeRawBufferPointer(start: bytes, count: count.pointee))
            }
        }
    }

    /// Whether the bytes equal the readable bytes of `buffer`.
    @inlinable
    public func equals(_ buffer: ByteBuffer) -> Bool {
        withUnsafeBytes { mine in
            buffer.withUnsafeReadableBytes { theirs in
                mine.count == theirs.count && (mine.count == 0 || memcmp(mine.baseAddress!, theirs.baseAddress!, mine.count) == 0)
            }
        }
    }

    /// A copy as a `ByteBuffer` (for the rare paths that want one).
    public var buffer: ByteBuffer {
        withUnsafeBytes { ByteBuffer(bytes: $0) }
    }

    @inlinable
    public static func == (a: StoredBytes, b: StoredBytes) -> Bool {
        // Inline bytes are zero-padded, so comparing the words compares the bytes.
        if case .inline(let a0, let a1, let a2, let an) = a.representation,
           case .inline(let b0, let b1, let b2, let bn) = b.representation {
            return an == bn && a0 == b0 && a1 == b1 && a2 == b2
        }
        return a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in x.count == y.count && (x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0) }
        }
    }
}

/// The heap form of `StoredBytes`: the count as the header, then the bytes, in one allocation.
/// Immutable once made.
public final class HeapBytes: ManagedBuffer<Int, UInt8> {
    @inlinable
    static func make(_ bytes: UnsafeRawBufferPointer) -> HeapBytes {
        let made = unsafeDowncast(HeapBytes.create(minimumCapacity: bytes.count) { _ in bytes.count }, to: HeapBytes.self)
        made.withUnsafeMutablePointerToElements { elements in
            if let base = bytes.baseAddress { UnsafeMutableRawPointer(elements).copyMemory(from: base, byteCount: bytes.count) }
        }
        return made
    }
}

extension ByteBuffer {
    /// Appends the bytes of a stored value.
    @inlinable
    public mutating func writeStoredBytes(_ bytes: StoredBytes) {
        bytes.withUnsafeBytes { _ = writeBytes($0) }
    }
}
