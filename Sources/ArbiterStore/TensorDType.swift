#if _endian(big)
#error("the store holds little-endian values and reads them in place; big-endian hosts are not supported")
#endif

/// The element types a stored tensor may hold, each little-endian.
public enum TensorDType: String, Codable, Sendable, CaseIterable {
    case f32, u64, i32, u32, u8

    /// Bytes per element.
    public var byteWidth: Int {
        switch self {
        case .f32, .i32, .u32: 4
        case .u64: 8
        case .u8: 1
        }
    }
}

/// A Swift type a stored tensor can be read as, in place.
public protocol TensorElement: BitwiseCopyable, Sendable {
    static var dtype: TensorDType { get }
}

extension Float: TensorElement { public static var dtype: TensorDType { .f32 } }
extension UInt64: TensorElement { public static var dtype: TensorDType { .u64 } }
extension Int32: TensorElement { public static var dtype: TensorDType { .i32 } }
extension UInt32: TensorElement { public static var dtype: TensorDType { .u32 } }
extension UInt8: TensorElement { public static var dtype: TensorDType { .u8 } }
