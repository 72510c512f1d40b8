using System.Collections.Immutable;
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;

namespace Multimodal.Tests.TestSupport;

/// <summary>The calls each method of an assembly makes, read from its IL (System.Reflection.Metadata), with
/// callees named "Type::method(ParamTypes)" so calls across assemblies compare by name.</summary>
public sealed class IlCalls
{
    /// <summary>One call: the calling type and method, the callee's name.</summary>
    public sealed record Call(string CallerType, string Caller, string Callee);

    public IReadOnlyList<Call> Calls { get; }

    private IlCalls(IReadOnlyList<Call> calls) => Calls = calls;

    /// <summary>Key of a method as callers name it.</summary>
    public static string Key(string type, string method, IEnumerable<string> parameters) =>
        $"{type}::{method}({string.Join(",", parameters)})";

    public static IlCalls Read(string assemblyPath)
    {
        using var stream = File.OpenRead(assemblyPath);
        using var pe = new PEReader(stream);
        var md = pe.GetMetadataReader();
        var names = new Names(md);
        var calls = new List<Call>();
        foreach (var typeHandle in md.TypeDefinitions)
        {
            var type = md.GetTypeDefinition(typeHandle);
            foreach (var methodHandle in type.GetMethods())
            {
                var method = md.GetMethodDefinition(methodHandle);
                if (method.RelativeVirtualAddress == 0) continue;
                string caller = names.Of(methodHandle);
                var il = pe.GetMethodBody(method.RelativeVirtualAddress).GetILReader();
                while (il.RemainingBytes > 0)
                {
                    var op = ReadOpCode(ref il);
                    if (op is ILOpCode.Call or ILOpCode.Callvirt or ILOpCode.Newobj or ILOpCode.Ldftn)
                        calls.Add(new Call(md.GetString(type.Name), caller, names.Of(MetadataTokens.EntityHandle(il.ReadInt32()))));
                    else SkipOperand(op, ref il);
                }
            }
        }
        return new IlCalls(calls);
    }

    private static ILOpCode ReadOpCode(ref BlobReader il)
    {
        byte b = il.ReadByte();
        return b == 0xFE ? (ILOpCode)(0xFE00 | il.ReadByte()) : (ILOpCode)b;
    }

    private static void SkipOperand(ILOpCode op, ref BlobReader il)
    {
        if (op == ILOpCode.Switch) { int n = il.ReadInt32(); il.Offset += 4 * n; return; }
        il.Offset += op.IsBranch() ? op.GetBranchOperandSize() : op switch
        {
            ILOpCode.Ldarg_s or ILOpCode.Ldarga_s or ILOpCode.Starg_s or ILOpCode.Ldloc_s or ILOpCode.Ldloca_s
                or ILOpCode.Stloc_s or ILOpCode.Ldc_i4_s or ILOpCode.Unaligned => 1,
            ILOpCode.Ldarg or ILOpCode.Ldarga or ILOpCode.Starg or ILOpCode.Ldloc or ILOpCode.Ldloca or ILOpCode.Stloc => 2,
            ILOpCode.Ldc_i8 or ILOpCode.Ldc_r8 => 8,
            ILOpCode.Ldc_i4 or ILOpCode.Ldc_r4 or ILOpCode.Jmp or ILOpCode.Calli or ILOpCode.Ldstr or ILOpCode.Ldfld
                or ILOpCode.Ldflda or ILOpCode.Stfld or ILOpCode.Ldsfld or ILOpCode.Ldsflda or ILOpCode.Stsfld
                or ILOpCode.Ldtoken or ILOpCode.Box or ILOpCode.Unbox or ILOpCode.Unbox_any or ILOpCode.Castclass
                or ILOpCode.Isinst or ILOpCode.Newarr or ILOpCode.Ldelema or ILOpCode.Ldelem or ILOpCode.Stelem
                or ILOpCode.Ldobj or ILOpCode.Stobj or ILOpCode.Cpobj or ILOpCode.Initobj or ILOpCode.Sizeof
                or ILOpCode.Mkrefany or ILOpCode.Refanyval or ILOpCode.Ldvirtftn or ILOpCode.Constrained => 4,
            _ => 0,
        };
    }

    private sealed class Names(MetadataReader md)
    {
        private readonly TypeNames _types = new();

        public string Of(MethodDefinitionHandle handle)
        {
            var m = md.GetMethodDefinition(handle);
            var signature = m.DecodeSignature(_types, null);
            return Key(md.GetString(md.GetTypeDefinition(m.GetDeclaringType()).Name), md.GetString(m.Name), signature.ParameterTypes);
        }

        public string Of(EntityHandle handle) => handle.Kind switch
        {
            HandleKind.MethodDefinition => Of((MethodDefinitionHandle)handle),
            HandleKind.MemberReference => OfReference((MemberReferenceHandle)handle),
            HandleKind.MethodSpecification => Of(md.GetMethodSpecification((MethodSpecificationHandle)handle).Method),
            _ => handle.Kind.ToString(),
        };

        private string OfReference(MemberReferenceHandle handle)
        {
            var r = md.GetMemberReference(handle);
            string parent = r.Parent.Kind switch
            {
                HandleKind.TypeReference => md.GetString(md.GetTypeReference((TypeReferenceHandle)r.Parent).Name),
                HandleKind.TypeDefinition => md.GetString(md.GetTypeDefinition((TypeDefinitionHandle)r.Parent).Name),
                HandleKind.TypeSpecification => md.GetTypeSpecification((TypeSpecificationHandle)r.Parent).DecodeSignature(_types, null),
                _ => r.Parent.Kind.ToString(),
            };
            if (r.GetKind() != MemberReferenceKind.Method) return parent + "::" + md.GetString(r.Name);
            return Key(parent, md.GetString(r.Name), r.DecodeMethodSignature(_types, null).ParameterTypes);
        }
    }

    // Types by simple name: enough to tell TorchSharp's overloads apart.
    private sealed class TypeNames : ISignatureTypeProvider<string, object?>
    {
        public string GetArrayType(string element, ArrayShape shape) => element + "[,]";
        public string GetByReferenceType(string element) => element + "&";
        public string GetFunctionPointerType(MethodSignature<string> signature) => "fnptr";
        public string GetGenericInstantiation(string generic, ImmutableArray<string> arguments) => generic;
        public string GetGenericMethodParameter(object? context, int index) => "!!" + index;
        public string GetGenericTypeParameter(object? context, int index) => "!" + index;
        public string GetModifiedType(string modifier, string unmodified, bool isRequired) => unmodified;
        public string GetPinnedType(string element) => element;
        public string GetPointerType(string element) => element + "*";
        public string GetPrimitiveType(PrimitiveTypeCode typeCode) => typeCode.ToString();
        public string GetSZArrayType(string element) => element + "[]";
        public string GetTypeFromDefinition(MetadataReader reader, TypeDefinitionHandle handle, byte rawTypeKind) => reader.GetString(reader.GetTypeDefinition(handle).Name);
        public string GetTypeFromReference(MetadataReader reader, TypeReferenceHandle handle, byte rawTypeKind) => reader.GetString(reader.GetTypeReference(handle).Name);
        public string GetTypeFromSpecification(MetadataReader reader, object? context, TypeSpecificationHandle handle, byte rawTypeKind) =>
            reader.GetTypeSpecification(handle).DecodeSignature(this, context);
    }
}
