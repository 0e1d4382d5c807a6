#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Opening files that must be regular files (models, external data, checkpoints, data sets).
///
/// A named pipe opened for reading blocks until a writer appears, forever if none does, so the
/// file is opened non-blocking and its type checked on the open descriptor before anything reads
/// it: a pipe, a device (`/dev/null`), a socket or a folder is refused with one line saying what it is.
enum RegularFile {
    /// An open regular file: its descriptor (the caller closes it) and its size in bytes.
    struct Opened {
        let descriptor: Int32
        let size: Int
    }

    /// Opens `path` for reading, refusing anything but a regular file (symbolic links are followed).
    static func opened(_ path: String) throws -> Opened {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw OnnxTrainError.io(code == ENOENT ? "\(path): no such file" : "\(path): cannot open (\(String(cString: strerror(code))))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw OnnxTrainError.io("\(path): cannot stat (\(String(cString: strerror(code))))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw OnnxTrainError.io("\(path): is \(kind(info.st_mode)), not a regular file")
        }
        // Regular files never block; clear the flag so reads behave as usual.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return Opened(descriptor: fd, size: Int(info.st_size))
    }

    /// Checks that `path` is a readable regular file without reading it.
    static func check(_ path: String) throws {
        close(try opened(path).descriptor)
    }

    /// The whole file.
    static func readBytes(_ path: String) throws -> [UInt8] {
        let file = try opened(path)
        defer { close(file.descriptor) }
        var bytes = [UInt8](repeating: 0, count: file.size)
        try bytes.withUnsafeMutableBytes { try read(file, path: path, into: $0) }
        return bytes
    }

    /// Reads the first `buffer.count` bytes of `file` (opened from `path`) into `buffer`.
    static func read(_ file: Opened, path: String, into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = Glibc.read(file.descriptor, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw OnnxTrainError.io("\(path): cannot read (\(n < 0 ? String(cString: strerror(errno)) : "the file shrank while reading"))")
            }
            done += n
        }
    }

    /// "a named pipe", "a folder", ...: what a file of mode `mode` is.
    static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a folder"
        case S_IFIFO: return "a named pipe (FIFO)"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "a special file"
        }
    }
}
