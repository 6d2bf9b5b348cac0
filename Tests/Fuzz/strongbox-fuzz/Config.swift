import Engine

/// libFuzzer target: the redis.conf parser and every parameter's value parser.
enum ConfigTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        guard let directives = try? ConfigStore.parseConfigText(Array(data)) else { return }
        let store = ConfigStore()
        for (_, name, args) in directives {
            try? store.set(name, args.joined(separator: " "), startup: true)
        }
    }
}
