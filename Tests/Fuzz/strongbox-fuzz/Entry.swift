import Foundation

/// One libFuzzer executable for every fuzz target; `STRONGBOX_FUZZ_TARGET` (fuzzing) or the
/// first argument (replay) picks which: `request`, `reply`, `config`, `commands`.
let fuzzTargets: [String: @Sendable (UnsafeRawBufferPointer) -> Void] = [
    "request": RequestDecoderTarget.run,
    "reply": ReplyDecoderTarget.run,
    "config": ConfigTarget.run,
    "commands": CommandsTarget.run,
]

#if FUZZING
let selectedTarget: @Sendable (UnsafeRawBufferPointer) -> Void = {
    let name = ProcessInfo.processInfo.environment["STRONGBOX_FUZZ_TARGET"] ?? ""
    guard let run = fuzzTargets[name] else {
        print("STRONGBOX_FUZZ_TARGET must be one of \(fuzzTargets.keys.sorted())")
        exit(2)
    }
    return run
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selectedTarget(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}
#else
/// Without libFuzzer: `strongbox-fuzz <target> <file or folder>...` replays inputs (the kept
/// corpus and crash inputs under Tests/Fuzz/corpus/<target>).
@main
enum Replay {
    static func main() throws {
        let args = CommandLine.arguments.dropFirst()
        guard let name = args.first, let run = fuzzTargets[name] else {
            print("usage: strongbox-fuzz \(fuzzTargets.keys.sorted().joined(separator: "|")) <file or folder>...")
            exit(2)
        }
        var count = 0
        for path in args.dropFirst() {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            let files = isDirectory.boolValue
                ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { "\(path)/\($0)" }
                : [path]
            for file in files {
                let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
                bytes.withUnsafeBytes { run($0) }
                count += 1
            }
        }
        print("replayed \(count) \(name) inputs")
    }
}
#endif
