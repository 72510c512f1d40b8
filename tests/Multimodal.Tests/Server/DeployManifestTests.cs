using System.Text.RegularExpressions;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using YamlDotNet.RepresentationModel;

namespace Multimodal.Tests.Server;

/// <summary>deploy/: the Kubernetes manifests parse, their probes reach the server's endpoints on the port the
/// image listens on, the autoscaler and Service point at the Deployment, and the Indexed Job wires its index to
/// caption-batch's shard with as many shards as completions. (No cluster here: the wiring is what is checked.)</summary>
public sealed class DeployManifestTests(ITestOutputHelper output)
{
    private static readonly string Deploy = Path.Combine(Repo.Root, "deploy");

    private static List<YamlMappingNode> Documents(string file)
    {
        var stream = new YamlStream();
        using (var reader = new StreamReader(Path.Combine(Deploy, "k8s", file))) stream.Load(reader);
        return stream.Documents.Select(d => (YamlMappingNode)d.RootNode).ToList();
    }

    private static YamlNode At(YamlNode node, params object[] path)
    {
        foreach (var step in path)
            node = step is int i ? ((YamlSequenceNode)node).Children[i] : ((YamlMappingNode)node).Children[new YamlScalarNode((string)step)];
        return node;
    }

    private static string Text(YamlNode node, params object[] path) => ((YamlScalarNode)At(node, path)).Value!;

    [Fact]
    public void The_server_manifests_probe_the_servers_endpoints_on_the_images_port()
    {
        var docs = Documents("server.yaml");
        var deployment = docs.Single(d => Text(d, "kind") == "Deployment");
        var service = docs.Single(d => Text(d, "kind") == "Service");
        var hpa = docs.Single(d => Text(d, "kind") == "HorizontalPodAutoscaler");
        var container = At(deployment, "spec", "template", "spec", "containers", 0);
        string dockerfile = File.ReadAllText(Path.Combine(Deploy, "Dockerfile"));
        string imagePort = Regex.Match(dockerfile, @"ASPNETCORE_URLS=http://0\.0\.0\.0:(\d+)").Groups[1].Value;
        Assert.Equal(imagePort, Text(container, "ports", 0, "containerPort"));
        string portName = Text(container, "ports", 0, "name");
        Assert.Equal("/readyz", Text(container, "readinessProbe", "httpGet", "path"));
        Assert.Equal("/healthz", Text(container, "livenessProbe", "httpGet", "path"));
        Assert.Equal(portName, Text(container, "readinessProbe", "httpGet", "port"));
        Assert.Equal(portName, Text(container, "livenessProbe", "httpGet", "port"));
        Assert.Equal(portName, Text(service, "spec", "ports", 0, "targetPort"));
        Assert.Equal(Text(deployment, "spec", "selector", "matchLabels", "app"), Text(service, "spec", "selector", "app"));
        Assert.Equal(Text(deployment, "metadata", "name"), Text(hpa, "spec", "scaleTargetRef", "name"));
        Assert.NotEmpty(Text(container, "resources", "requests", "memory"));
        Assert.Contains("EXPOSE " + imagePort, dockerfile);
        output.WriteLine($"Deployment {Text(deployment, "metadata", "name")}: port {imagePort}, probes /readyz /healthz, HPA {Text(hpa, "spec", "minReplicas")}-{Text(hpa, "spec", "maxReplicas")}");
    }

    [Fact]
    public void The_indexed_job_gives_each_pod_its_own_shard_and_file()
    {
        var job = Documents("caption-batch-job.yaml").Single();
        Assert.Equal("Indexed", Text(job, "spec", "completionMode"));
        int completions = int.Parse(Text(job, "spec", "completions"));
        string command = Text(At(job, "spec", "template", "spec", "containers", 0), "args", 0);
        var shard = Regex.Match(command, @"--shard \$\{JOB_COMPLETION_INDEX\}/(\d+)");
        Assert.True(shard.Success, command);
        Assert.Equal(completions, int.Parse(shard.Groups[1].Value));
        Assert.Matches(@"--output \S*\$\{JOB_COMPLETION_INDEX\}\S*\.jsonl", command);
        Assert.Contains("--resume", command);
        Assert.Contains("caption-batch", command);
        Assert.Equal(Text(Documents("server.yaml").Single(d => Text(d, "kind") == "Deployment"), "spec", "template", "spec", "containers", 0, "image"),
            Text(At(job, "spec", "template", "spec", "containers", 0), "image"));
        output.WriteLine($"{completions} shards: {command}");
    }
}
