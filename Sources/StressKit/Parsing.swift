/// Parses durations as the tool's options write them: `500ms`, `5s`, `2m`, `1h`, `250us`; a bare number is milliseconds.
public func parseDuration(_ text: String) -> Duration? {
    let t = text.trimmingCharacters(in: .whitespaces).lowercased()
    let units: [(String, Double)] = [("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where t.hasSuffix(suffix) {
        guard let n = Double(t.dropLast(suffix.count)), n >= 0 else { return nil }
        return .nanoseconds(Int64(n * scale * 1e9))
    }
    guard let ms = Double(t), ms >= 0 else { return nil }
    return .nanoseconds(Int64(ms * 1e6))
}

extension Duration {
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    public var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
}

/// A key distribution: `uniform`, or `zipf:s` (rank r drawn with probability ∝ 1/r^s).
public enum KeyDistribution: Sendable, CustomStringConvertible, Equatable {
    case uniform
    case zipf(Double)

    public init?(_ text: String) {
        if text == "uniform" { self = .uniform; return }
        if text.hasPrefix("zipf:"), let s = Double(text.dropFirst(5)), s > 0 { self = .zipf(s); return }
        return nil
    }

    public var description: String {
        switch self {
        case .uniform: return "uniform"
        case .zipf(let s): return "zipf:\(s)"
        }
    }
}

/// Draws key indices 0..<n from a distribution (zipf by inverse CDF over a precomputed table).
public struct KeySampler: Sendable {
    private let n: Int
    private let cdf: [Double]?

    public init(_ distribution: KeyDistribution, keys n: Int) {
        self.n = n
        switch distribution {
        case .uniform:
            cdf = nil
        case .zipf(let s):
            var acc = 0.0
            var table = [Double](repeating: 0, count: n)
            for r in 0..<n {
                acc += 1 / pow(Double(r + 1), s)
                table[r] = acc
            }
            cdf = table.map { $0 / acc }
        }
    }

    public func next<G: RandomNumberGenerator>(using g: inout G) -> Int {
        guard let cdf else { return Int.random(in: 0..<n, using: &g) }
        let u = Double.random(in: 0..<1, using: &g)
        var lo = 0, hi = n - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cdf[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}

import Foundation
