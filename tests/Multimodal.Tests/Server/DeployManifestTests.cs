using System.Text.RegularExpressions;
using k8s;
using k8s.Models;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Server;

/// <summary>deploy/: every manifest is read with the Kubernetes client's own models (an unknown field or kind fails), then
/// held to rules a real API server or kubelet enforces — the Job's <c>backoffLimitPerIndex</c> needs Indexed completion
/// and <c>restartPolicy: Never</c>, selectors match their templates, probes name declared ports — and to ours: non-root,
/// read-only root with a writable /tmp, fsGroup where a volume is written, memory requests and limits that hold the
/// request budget. The wiring between the Dockerfile, the Deployment, the Service and the Job is checked too.</summary>
public sealed partial class DeployManifestTests(ITestOutputHelper output)
{
    private static readonly string Deploy = Path.Combine(Repo.Root, "deploy");

    /// <summary>Resident memory of the server with models/blip2-shapes loaded, measured under load (README, "Limits").</summary>
    private const long ServerPlateauBytes = 400L << 20;

    public static TheoryData<string> Manifests() => new(Directory.EnumerateFiles(Path.Combine(Deploy, "k8s"), "*.yaml").Select(Path.GetFileName).OfType<string>());

    private static List<object> Load(string file) => KubernetesYaml.LoadAllFromString(File.ReadAllText(Path.Combine(Deploy, "k8s", file)), strict: true);

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex Dns1123Label();

    [Theory]
    [MemberData(nameof(Manifests))]
    public void Every_manifest_passes_the_rules_a_cluster_enforces(string file)
    {
        var objects = Load(file);
        Assert.NotEmpty(objects);
        foreach (var o in objects)
        {
            var problems = Problems(o);
            output.WriteLine($"{file}: {o.GetType().Name} {((IKubernetesObject<V1ObjectMeta>)o).Metadata.Name}: {(problems.Count == 0 ? "ok" : string.Join("; ", problems))}");
            Assert.Empty(problems);
        }
    }

    [Fact]
    public void The_rules_catch_the_job_a_real_API_server_refused()
    {
        // The Job as it was: backoffLimitPerIndex with restartPolicy OnFailure, root, writable root filesystem.
        const string refused = """
            apiVersion: batch/v1
            kind: Job
            metadata: { name: multimodal-caption-batch }
            spec:
              completionMode: Indexed
              completions: 4
              parallelism: 4
              backoffLimitPerIndex: 3
              template:
                spec:
                  restartPolicy: OnFailure
                  containers:
                    - name: caption
                      image: multimodal-server:latest
                      resources: { requests: { memory: 512Mi }, limits: { memory: 1Gi } }
            """;
        var problems = Problems(KubernetesYaml.LoadAllFromString(refused, strict: true).Single());
        output.WriteLine(string.Join("\n", problems));
        Assert.Contains("backoffLimitPerIndex needs restartPolicy: Never", problems);
        Assert.Contains("the pod must set runAsNonRoot", problems);
        Assert.Contains(problems, p => p.Contains("readOnlyRootFilesystem"));
    }

    private static List<string> Problems(object o)
    {
        var problems = new List<string>();
        var kube = (IKubernetesObject<V1ObjectMeta>)o;
        if (!Dns1123Label().IsMatch(kube.Metadata.Name ?? "")) problems.Add($"name '{kube.Metadata.Name}' is not a DNS-1123 label");
        {
            switch (o)
            {
                case V1Deployment d:
                    Assert.NotNull(d.Spec.Selector.MatchLabels);
                    foreach (var (k, v) in d.Spec.Selector.MatchLabels)
                        if ((d.Spec.Template.Metadata.Labels is { } labels && labels.TryGetValue(k, out var value) ? value : null) != v) problems.Add($"selector {k}={v} does not match the template's labels");
                    if (d.Spec.Template.Spec.RestartPolicy is not (null or "Always")) problems.Add("a Deployment's pods must restart Always");
                    CheckPod(d.Spec.Template.Spec, problems);
                    break;
                case V1Job j:
                    var pod = j.Spec.Template.Spec;
                    if (pod.RestartPolicy is not ("Never" or "OnFailure")) problems.Add("a Job's restartPolicy must be Never or OnFailure");
                    if (j.Spec.BackoffLimitPerIndex is not null)
                    {
                        if (j.Spec.CompletionMode != "Indexed") problems.Add("backoffLimitPerIndex needs completionMode: Indexed");
                        if (pod.RestartPolicy != "Never") problems.Add("backoffLimitPerIndex needs restartPolicy: Never");
                    }
                    if (j.Spec.CompletionMode == "Indexed" && j.Spec.Completions is null) problems.Add("an Indexed Job needs completions");
                    if (j.Spec.Parallelism > j.Spec.Completions) problems.Add("parallelism above completions");
                    CheckPod(pod, problems);
                    break;
                case V1Service s:
                    Assert.NotEmpty(s.Spec.Ports);
                    break;
                case V2HorizontalPodAutoscaler h:
                    if (h.Spec.MinReplicas > h.Spec.MaxReplicas) problems.Add("minReplicas above maxReplicas");
                    break;
                default:
                    problems.Add($"{o.GetType().Name} is not a kind this test knows the rules of");
                    break;
            }
        }
        return problems;
    }

    // Non-root, no privilege escalation, a read-only root with /tmp writable, fsGroup for written volumes, and memory
    // requests/limits that hold the model and the request budget.
    private static void CheckPod(V1PodSpec pod, List<string> problems)
    {
        if (pod.SecurityContext?.RunAsNonRoot != true) problems.Add("the pod must set runAsNonRoot");
        var volumes = pod.Volumes ?? [];
        foreach (var c in pod.Containers)
        {
            var security = c.SecurityContext;
            if (security?.AllowPrivilegeEscalation != false) problems.Add($"{c.Name}: allowPrivilegeEscalation must be false");
            if (security?.ReadOnlyRootFilesystem != true) problems.Add($"{c.Name}: readOnlyRootFilesystem must be true");
            var mounts = c.VolumeMounts ?? [];
            var tmp = mounts.FirstOrDefault(m => m.MountPath == "/tmp");
            if (tmp is null || volumes.FirstOrDefault(v => v.Name == tmp.Name)?.EmptyDir is null) problems.Add($"{c.Name}: /tmp must be an emptyDir");
            foreach (var m in mounts)
            {
                var volume = volumes.FirstOrDefault(v => v.Name == m.Name);
                if (volume is null) problems.Add($"{c.Name}: mount {m.Name} names no volume");
                else if (volume.PersistentVolumeClaim is not null && m.ReadOnlyProperty != true && pod.SecurityContext?.FsGroup is null)
                    problems.Add($"{c.Name}: {m.MountPath} is written by a non-root user: set fsGroup");
            }
            var requests = c.Resources?.Requests;
            var limits = c.Resources?.Limits;
            if (requests is null || limits is null || !requests.TryGetValue("memory", out var request) || !limits.TryGetValue("memory", out var limit))
            {
                problems.Add($"{c.Name}: memory requests and limits must be set");
                continue;
            }
            if (request.ToInt64() > limit.ToInt64()) problems.Add($"{c.Name}: memory request above its limit");
            long budget = (c.Env ?? []).FirstOrDefault(e => e.Name == "Multimodal__MemoryBudgetMB")?.Value is { } mb ? long.Parse(mb) << 20 : 0;
            if (ServerPlateauBytes + budget > limit.ToInt64())
                problems.Add($"{c.Name}: the limit {limit} cannot hold the server ({ServerPlateauBytes >> 20} MB) and its budget ({budget >> 20} MB)");
            foreach (var probe in new[] { c.ReadinessProbe, c.LivenessProbe, c.StartupProbe })
                if (probe?.HttpGet?.Port is { } port && port.Value is string name && c.Ports?.Any(p => p.Name == name) != true)
                    problems.Add($"{c.Name}: a probe names port '{name}', which the container does not declare");
        }
    }

    [Fact]
    public void The_server_manifests_probe_the_servers_endpoints_on_the_images_port()
    {
        var objects = Load("server.yaml");
        var deployment = objects.OfType<V1Deployment>().Single();
        var service = objects.OfType<V1Service>().Single();
        var hpa = objects.OfType<V2HorizontalPodAutoscaler>().Single();
        var container = deployment.Spec.Template.Spec.Containers[0];
        string dockerfile = File.ReadAllText(Path.Combine(Deploy, "Dockerfile"));
        int imagePort = int.Parse(Regex.Match(dockerfile, @"ASPNETCORE_URLS=http://0\.0\.0\.0:(\d+)").Groups[1].Value);
        Assert.Equal(imagePort, container.Ports[0].ContainerPort);
        string portName = container.Ports[0].Name;
        Assert.Equal("/readyz", container.ReadinessProbe.HttpGet.Path);
        Assert.Equal("/healthz", container.LivenessProbe.HttpGet.Path);
        Assert.Equal(portName, container.ReadinessProbe.HttpGet.Port.Value);
        Assert.Equal(portName, service.Spec.Ports[0].TargetPort.Value);
        Assert.Equal(deployment.Spec.Selector.MatchLabels["app"], service.Spec.Selector["app"]);
        Assert.Equal(deployment.Metadata.Name, hpa.Spec.ScaleTargetRef.Name);
        Assert.Contains("EXPOSE " + imagePort, dockerfile);
        Assert.Contains("-r linux-x64", dockerfile);
        // The API key reaches the server from a Secret mounted as a file, never from the manifest itself.
        Assert.Equal("/secrets/api-keys", container.Env.Single(e => e.Name == "Multimodal__ApiKeyFile").Value);
        Assert.NotNull(deployment.Spec.Template.Spec.Volumes.Single(v => v.Name == "api-keys").Secret);
        Assert.DoesNotContain(container.Env, e => e.Name.Contains("ApiKeys") || e.Name == "MULTIMODAL_API_KEY");
    }

    [Fact]
    public void The_build_context_leaves_out_build_outputs()
    {
        var ignored = File.ReadAllLines(Path.Combine(Repo.Root, ".dockerignore")).Select(l => l.Trim()).ToHashSet();
        foreach (var pattern in new[] { "**/bin/", "**/obj/", ".git/" }) Assert.Contains(pattern, ignored);
    }

    [Fact]
    public void The_indexed_job_gives_each_pod_its_own_shard_and_file()
    {
        var job = Load("caption-batch-job.yaml").OfType<V1Job>().Single();
        Assert.Equal("Indexed", job.Spec.CompletionMode);
        int completions = job.Spec.Completions!.Value;
        var container = job.Spec.Template.Spec.Containers[0];
        string command = container.Args[0];
        var shard = Regex.Match(command, @"--shard \$\{JOB_COMPLETION_INDEX\}/(\d+)");
        Assert.True(shard.Success, command);
        Assert.Equal(completions, int.Parse(shard.Groups[1].Value));
        Assert.Matches(@"--output \S*\$\{JOB_COMPLETION_INDEX\}\S*\.jsonl", command);
        Assert.Contains("--resume", command);
        Assert.Contains("caption-batch", command);
        Assert.Equal(Load("server.yaml").OfType<V1Deployment>().Single().Spec.Template.Spec.Containers[0].Image, container.Image);
        output.WriteLine($"{completions} shards: {command}");
    }
}
