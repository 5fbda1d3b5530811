#!/usr/bin/env ruby
# Renders one BOSH job template the way the director does, for tests and for looking at a config
# before deploying. Implements the part of BOSH's ERB context netman's templates use:
#   p("a.b"), p("a.b", default), p(["a", "b"]), if_p("a", "b") { |a, b| }, spec.{ip,address,
#   name,id,index,bootstrap,deployment,az,networks}, link("name").{p,if_p,address,instances},
#   if_link("name") { |l| }.
# A property comes from the manifest, else from the job spec's default; a property with neither
# makes p() fail with BOSH's message ("Can't find property 'x'").
#
#   ruby render-template.rb JOB_DIR TEMPLATE_SOURCE CONTEXT_JSON > rendered
#
# CONTEXT_JSON: {"properties": {...nested manifest properties...},
#                "spec": {"ip": "...", "name": "...", ...},
#                "links": {"name": {"properties": {...}, "instances": [{"address": "..."}]}}}
require "erb"
require "json"
require "yaml"
require "ostruct"

class UnknownProperty < StandardError
  def initialize(names)
    super("Can't find property '#{Array(names).join("', or '")}'")
  end
end

def dig_nested(hash, name)
  name.split(".").reduce(hash) do |h, k|
    return [false, nil] unless h.is_a?(Hash) && h.key?(k)
    h[k]
  end.then { |v| [true, v] }
end

class Properties
  def initialize(manifest, spec_props)
    @manifest = manifest || {}
    @spec_props = spec_props || {}
  end

  def lookup(name)
    found, value = dig_nested(@manifest, name)
    return [true, value] if found
    if @spec_props.key?(name) && @spec_props[name].is_a?(Hash) && @spec_props[name].key?("default")
      return [true, @spec_props[name]["default"]]
    end
    [false, nil]
  end

  def p(*args)
    names = Array(args[0])
    names.each do |n|
      found, value = lookup(n)
      return value if found
    end
    return args[1] if args.length > 1
    raise UnknownProperty, names
  end

  def if_p(*names)
    values = names.map do |n|
      found, value = lookup(n)
      return ActiveElse.new(false) unless found && !value.nil?
      value
    end
    yield(*values)
    ActiveElse.new(true)
  end
end

class ActiveElse
  def initialize(taken)
    @taken = taken
  end

  def else
    yield unless @taken
  end
end

class Link
  def initialize(data)
    @props = Properties.new(data["properties"], {})
    @instances = (data["instances"] || []).map { |i| OpenStruct.new(i) }
    @data = data
  end
  attr_reader :instances

  def p(*args) = @props.p(*args)
  def if_p(*names, &blk) = @props.if_p(*names, &blk)
  def address = @data["address"] || (@instances.first && @instances.first.address)
end

class Context
  def initialize(spec_props, context)
    @props = Properties.new(context["properties"], spec_props)
    spec = {"name" => "job", "id" => "0", "index" => 0, "bootstrap" => true,
            "deployment" => "netman", "az" => "z1", "ip" => "10.0.16.17",
            "address" => "10.0.16.17", "networks" => {}}.merge(context["spec"] || {})
    spec["networks"] = spec["networks"].transform_values { |n| OpenStruct.new(n) }
    spec["networks"] = OpenStruct.new(spec["networks"])
    @spec = OpenStruct.new(spec)
    @links = context["links"] || {}
  end
  attr_reader :spec

  def p(*args) = @props.p(*args)
  def if_p(*names, &blk) = @props.if_p(*names, &blk)

  def link(name)
    raise "Can't find link '#{name}'" unless @links.key?(name)
    Link.new(@links[name])
  end

  def if_link(name)
    return ActiveElse.new(false) unless @links.key?(name)
    yield link(name)
    ActiveElse.new(true)
  end

  def render(text) = ERB.new(text, trim_mode: "-").result(binding)
end

job_dir, template, context_file = ARGV
abort "usage: render-template.rb JOB_DIR TEMPLATE_SOURCE CONTEXT_JSON" unless context_file
spec = YAML.safe_load(File.read(File.join(job_dir, "spec")))
unless (spec["templates"] || {}).key?(template)
  abort "#{template} is not a template of job #{spec["name"]}"
end
context = JSON.parse(File.read(context_file))
begin
  print Context.new(spec["properties"], context).render(File.read(File.join(job_dir, "templates", template)))
rescue UnknownProperty, RuntimeError => e
  abort "#{spec["name"]}/#{template}: #{e.message}"
end
