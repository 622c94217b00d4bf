# An Action Cable server (Debian's ruby-actioncable) under puma, mounted at /cable with the
# async adapter. EchoChannel transmits back what its `echo` action receives.
# Prints one JSON line per event from Action Cable's own callbacks: listening (with the
# port), connect / disconnect (the connection), subscribed / unsubscribed (the channel), echo.
require "json"
require "logger"
require "puma"
require "action_cable"

$stdout.sync = true
SAY = Mutex.new
def say(event)
  SAY.synchronize { $stdout.puts(JSON.generate(event)) }
end

class PeerConnection < ActionCable::Connection::Base
  def connect
    say(event: "connect")
  end

  def disconnect
    say(event: "disconnect")
  end
end

class EchoChannel < ActionCable::Channel::Base
  def subscribed
    say(event: "subscribed")
  end

  def unsubscribed
    say(event: "unsubscribed")
  end

  def echo(data)
    say(event: "echo")
    transmit(data)
  end
end

config = ActionCable.server.config
config.cable = { "adapter" => "async" }
config.connection_class = -> { PeerConnection }
config.disable_request_forgery_protection = true
config.logger = Logger.new(nil)
config.worker_pool_size = 4

app = Rack::URLMap.new("/cable" => ActionCable.server)
server = Puma::Server.new(app, Puma::Events.strings, min_threads: 0, max_threads: 16)
listener = server.add_tcp_listener("127.0.0.1", 0)
say(event: "listening", port: listener.addr[1])
Signal.trap("TERM") { exit(0) }
server.run.join
